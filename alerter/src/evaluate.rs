//! The evaluator's unit of work: [`evaluate`] checks every enabled rule once for the tick `now`.
//! Each rule is claimed, checked and (if it fires) turned into an incident and outbox rows in one
//! transaction, so a firing is either wholly recorded or not at all, and two alerters never
//! evaluate one rule twice for one tick.

use crate::{
    rule::{self, Filters, RuleKind},
    store::{self, RuleRow, TopError, Xid8},
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A rule whose condition held at this tick.
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule_id: Uuid,
    pub rule_name: String,
    pub kind: RuleKind,
    pub incident_id: Uuid,
    /// The incident was opened by this firing (rather than updated).
    pub new_incident: bool,
    /// Events in the window (threshold) or groups found (new_error, regression).
    pub count: i64,
    /// False when the rule was still in its cooldown: the incident was updated, nobody was paged.
    pub notified: bool,
    /// Outbox rows written.
    pub notifications: Vec<Uuid>,
}

/// Evaluates every enabled rule not yet evaluated for `now`. A rule that fails (e.g. the database
/// hiccups) is logged and skipped for this tick; the others still run.
pub async fn evaluate(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Vec<Firing>> {
    let mut firings = Vec::new();
    let mut failed: Vec<Uuid> = Vec::new();
    loop {
        let mut tx = pool.begin().await?;
        let Some(rule) = store::claim_due_rule(&mut tx, now, &failed).await? else {
            tx.rollback().await?;
            break;
        };
        let rule_id = rule.id;
        match evaluate_rule(&mut tx, &rule, now).await {
            Ok(firing) => {
                tx.commit().await?;
                metrics::counter!("alerter_evaluations_total", "kind" => rule.kind.clone())
                    .increment(1);
                if let Some(f) = firing {
                    metrics::counter!("alerter_firings_total",
                        "kind" => rule.kind.clone(),
                        "notified" => if f.notified { "true" } else { "false" })
                    .increment(1);
                    tracing::info!(%rule_id, incident_id = %f.incident_id, count = f.count,
                        notified = f.notified, "Rule fired.");
                    firings.push(f);
                }
            }
            Err(e) => {
                let _ = tx.rollback().await;
                metrics::counter!("alerter_evaluation_errors_total").increment(1);
                tracing::warn!(%rule_id, error = format!("{e:#}"), "Rule evaluation failed; skipped for this tick.");
                failed.push(rule_id);
            }
        }
    }
    Ok(firings)
}

fn filters(rule: &RuleRow) -> Filters {
    Filters {
        level: rule.filter_level.clone(),
        source: rule.filter_source.clone(),
        environment: rule.filter_environment.clone(),
    }
}

/// Checks one claimed rule inside its transaction and records the firing, if any.
async fn evaluate_rule(
    tx: &mut sqlx::PgConnection,
    rule: &RuleRow,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Firing>> {
    let kind: RuleKind = rule
        .kind
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown rule kind {:?}", rule.kind))?;
    let window_secs = rule.time_window_secs.max(1) as i64;
    // How far this evaluation sees in commit order (taken after the rule row was locked, so the
    // previous bound read with it is the latest one). Never behind the previous bound: it cannot
    // be (an xmin only grows), and going back would count rows twice.
    let upto = store::snapshot_xmin(tx)
        .await?
        .max(rule.last_xmin.unwrap_or(Xid8(0)));
    // For display: new_error/regression report what happened since the last evaluation (or since
    // the rule was created); threshold looks at the window, rounded out to whole rollup minutes.
    let since = rule.last_evaluated_at.unwrap_or(rule.created_at);
    let (window_start, count, top) = match kind {
        RuleKind::Threshold => {
            let from = (now - TimeDelta::seconds(window_secs))
                .duration_trunc(TimeDelta::minutes(1))
                .unwrap_or(now);
            let (count, top) = store::threshold_count(tx, rule, from, now).await?;
            (from, count, top)
        }
        RuleKind::NewError | RuleKind::Regression => {
            // Groups stamped by transactions from the previous bound up to this one: a group
            // whose transaction was still open at the previous evaluation is counted now, and
            // one still open now is counted by the next evaluation after it commits. A rule's
            // first evaluation starts by time, from its creation (or its last evaluation by time).
            let from = match rule.last_xmin {
                Some(xid) => store::Since::Xid(xid),
                None => store::Since::Time(since),
            };
            let (count, top) =
                store::changed_groups(tx, rule, kind == RuleKind::Regression, from, upto).await?;
            (since, count, top)
        }
    };
    let fires = match kind {
        RuleKind::Threshold => count > rule.threshold,
        _ => count > 0,
    };
    store::mark_evaluated(tx, rule.id, now, upto).await?;
    if !fires {
        return Ok(None);
    }

    let cooldown = TimeDelta::seconds(rule.cooldown_secs.max(0) as i64);
    let in_cooldown = rule
        .last_triggered
        .is_some_and(|t| now < t + cooldown && t <= now);
    let condition =
        rule::condition_sentence(kind, rule.threshold, window_secs as u64, &filters(rule));
    let description = describe(kind, count, window_secs as u64, rule, top.as_ref());
    let (incident_id, new_incident) =
        store::open_or_update_incident(tx, rule, &rule.name, &description, count, now).await?;

    let mut notifications = Vec::new();
    if !in_cooldown {
        store::mark_triggered(tx, rule.id, now).await?;
        for channel in &rule.notifications {
            // (rule, incident, window end, channel): a replay of this firing maps to this key.
            let key = format!(
                "{}:{}:{}:{}",
                rule.id,
                incident_id,
                now.timestamp_millis(),
                channel
            );
            let payload = payload(PayloadParts {
                key: &key,
                rule,
                kind,
                condition: &condition,
                incident_id,
                new_incident,
                count,
                window_start,
                now,
                top: top.as_ref(),
                description: &description,
            });
            if let Some(id) = store::enqueue_notification(
                tx,
                rule.project_id,
                rule.id,
                incident_id,
                channel,
                &key,
                &payload,
                now,
            )
            .await?
            {
                notifications.push(id);
            }
        }
    }
    Ok(Some(Firing {
        rule_id: rule.id,
        rule_name: rule.name.clone(),
        kind,
        incident_id,
        new_incident,
        count,
        notified: !in_cooldown,
        notifications,
    }))
}

fn describe(
    kind: RuleKind,
    count: i64,
    window_secs: u64,
    rule: &RuleRow,
    top: Option<&TopError>,
) -> String {
    let head = match kind {
        RuleKind::Threshold => format!(
            "{count} events in the last {} (threshold {})",
            rule::describe_duration(window_secs),
            rule.threshold
        ),
        RuleKind::NewError => format!("{count} new error group(s) first seen"),
        RuleKind::Regression => format!("{count} resolved error group(s) occurred again"),
    };
    match top {
        Some(t) => format!(
            "{head}; top error: {} ({}, {})",
            t.message, t.level, t.source
        ),
        None => head,
    }
}

struct PayloadParts<'a> {
    key: &'a str,
    rule: &'a RuleRow,
    kind: RuleKind,
    condition: &'a str,
    incident_id: Uuid,
    new_incident: bool,
    count: i64,
    window_start: DateTime<Utc>,
    now: DateTime<Utc>,
    top: Option<&'a TopError>,
    description: &'a str,
}

/// The notification as stored in the outbox and sent (as is) to webhooks; Slack and email render
/// their messages from it. Links are added at delivery time from `PUBLIC_URL`.
fn payload(p: PayloadParts<'_>) -> Value {
    let r = p.rule;
    json!({
        "type": "alert.fired",
        "idempotency_key": p.key,
        "project_id": r.project_id,
        "rule": {
            "id": r.id,
            "name": r.name,
            "kind": p.kind.as_str(),
            "condition": p.condition,
            "threshold": r.threshold,
            "time_window": rule::format_duration(r.time_window_secs.max(0) as u64),
            "severity": r.severity,
            "filters": {
                "level": r.filter_level,
                "source": r.filter_source,
                "environment": r.filter_environment,
            },
        },
        "incident": {
            "id": p.incident_id,
            "title": r.name,
            "severity": r.severity,
            "new": p.new_incident,
        },
        "count": p.count,
        "window": {
            "duration": rule::format_duration(r.time_window_secs.max(0) as u64),
            "start": p.window_start,
            "end": p.now,
        },
        "source": r.filter_source,
        "summary": p.description,
        "top_error": p.top,
        "fired_at": p.now,
    })
}
