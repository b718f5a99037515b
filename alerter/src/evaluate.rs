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

/// How far back a threshold rule looks for minutes written after its previous evaluation: a
/// worker behind by more than this (after a long outage) still loses its events for the rule.
pub const LATE_COMMIT_LOOKBACK: TimeDelta = TimeDelta::hours(1);

/// The first minute and the count of the busiest window of `buckets` rollup minutes among the
/// current one (ending at `last`) and every earlier one holding a minute that changed since the
/// rule's previous evaluation and has left the current window; `None` when there are no minutes at
/// all. A threshold
/// rule counts what was *received* in its window, and the previous evaluations judged each earlier
/// window on what had been committed by then: only windows with a minute written since can hold
/// more now, and checking only those keeps a burst that was already judged from being judged again.
/// A changed minute still inside the current window is judged there (a worker that keeps up writes
/// only such minutes), so a busy window is not reported again one tick later merely because the
/// storm is easing. On a tie the latest window wins.
pub fn busiest_window(
    minutes: &[store::MinuteCount],
    last: DateTime<Utc>,
    buckets: i64,
) -> Option<(DateTime<Utc>, i64)> {
    let buckets = buckets.max(1);
    let first = minutes
        .first()?
        .minute
        .min(last - TimeDelta::minutes(buckets - 1));
    let span = (last - first).num_minutes() + 1;
    // Counts per minute from `first` to `last`, and their prefix sums.
    let mut counts = vec![0i64; span as usize];
    let mut changed = vec![false; span as usize];
    for m in minutes {
        let i = (m.minute - first).num_minutes();
        if (0..span).contains(&i) {
            counts[i as usize] += m.count;
            changed[i as usize] |= m.changed;
        }
    }
    // Changed minutes the current window holds are judged by it.
    let current = span - 1;
    for c in changed
        .iter_mut()
        .skip((current - buckets + 1).max(0) as usize)
    {
        *c = false;
    }
    // Prefix sums of the counts and of the changed minutes: each window is then two look-ups.
    let mut prefix = vec![0i64; span as usize + 1];
    let mut changes = vec![0i64; span as usize + 1];
    for i in 0..span as usize {
        prefix[i + 1] = prefix[i] + counts[i];
        changes[i + 1] = changes[i] + i64::from(changed[i]);
    }
    let sum = |p: &[i64], end: i64| p[end as usize + 1] - p[(end - buckets + 1).max(0) as usize];
    let mut best = (sum(&prefix, current), current);
    for end in ((buckets - 1)..current).rev() {
        if sum(&changes, end) > 0 && sum(&prefix, end) > best.0 {
            best = (sum(&prefix, end), end);
        }
    }
    Some((first + TimeDelta::minutes(best.1 - buckets + 1), best.0))
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
    let mut snapshot = None;
    let (window_start, count, top, late) = match kind {
        RuleKind::Threshold => {
            let minute = |t: DateTime<Utc>| t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t);
            let from = minute(now - TimeDelta::seconds(window_secs));
            // Minutes written late (by a worker behind, or one back after an outage) are looked
            // for as far back as LATE_COMMIT_LOOKBACK; a rule's first evaluation has no snapshot
            // to compare with and judges the current window only.
            let (minutes, seen_now) = store::minute_counts(
                tx,
                rule,
                from - LATE_COMMIT_LOOKBACK,
                now,
                rule.last_snapshot.as_deref(),
            )
            .await?;
            snapshot = Some(seen_now);
            let buckets = (minute(now) - from).num_minutes() + 1;
            // When a window of earlier minutes that changed since the previous evaluation holds
            // more than the current one, that is the one reported. The count comes from the
            // minutes just read; the top error is looked up only when the rule fires.
            let (start, count) =
                busiest_window(&minutes, minute(now), buckets).unwrap_or((from, 0));
            let top = if count > rule.threshold {
                let end = start + (minute(now) - from);
                store::top_error(tx, rule, start, end).await?
            } else {
                None
            };
            (start, count, top, start != from)
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
            (since, count, top, false)
        }
    };
    let fires = match kind {
        RuleKind::Threshold => count > rule.threshold,
        _ => count > 0,
    };
    store::mark_evaluated(tx, rule.id, now, upto, snapshot.as_deref()).await?;
    if !fires {
        return Ok(None);
    }

    let cooldown = TimeDelta::seconds(rule.cooldown_secs.max(0) as i64);
    let in_cooldown = rule
        .last_triggered
        .is_some_and(|t| now < t + cooldown && t <= now);
    let condition =
        rule::condition_sentence(kind, rule.threshold, window_secs as u64, &filters(rule));
    let late_start = late.then_some(window_start);
    let description = describe(
        kind,
        count,
        window_secs as u64,
        late_start,
        rule,
        top.as_ref(),
    );
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

/// `late_start`: the start of an earlier window that a threshold rule reports because events
/// received then were written late (see [`busiest_window`]).
fn describe(
    kind: RuleKind,
    count: i64,
    window_secs: u64,
    late_start: Option<DateTime<Utc>>,
    rule: &RuleRow,
    top: Option<&TopError>,
) -> String {
    let head = match (kind, late_start) {
        (RuleKind::Threshold, None) => format!(
            "{count} events in the last {} (threshold {})",
            rule::describe_duration(window_secs),
            rule.threshold
        ),
        (RuleKind::Threshold, Some(start)) => format!(
            "{count} events in the {} from {} UTC, stored late (threshold {})",
            rule::describe_duration(window_secs),
            start.format("%Y-%m-%d %H:%M"),
            rule.threshold
        ),
        (RuleKind::NewError, _) => format!("{count} new error group(s) first seen"),
        (RuleKind::Regression, _) => format!("{count} resolved error group(s) occurred again"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + TimeDelta::minutes(min)
    }

    fn m(min: i64, count: i64, changed: bool) -> store::MinuteCount {
        store::MinuteCount {
            minute: at(min),
            count,
            changed,
        }
    }

    #[test]
    fn the_current_window_when_nothing_earlier_changed() {
        // A burst at minutes 0..2 that earlier evaluations already judged, 3 events now.
        let minutes = [m(0, 50, false), m(1, 50, false), m(58, 3, true)];
        assert_eq!(busiest_window(&minutes, at(60), 6), Some((at(55), 3)));
        assert_eq!(busiest_window(&[], at(60), 6), None);
    }

    #[test]
    fn an_earlier_window_with_minutes_written_late_and_more_events_wins() {
        // 11 events received at minute 20, written after the windows covering them were judged.
        let minutes = [m(20, 11, true), m(59, 2, true)];
        let (start, count) = busiest_window(&minutes, at(60), 6).unwrap();
        assert!((at(15)..=at(20)).contains(&start), "{start}");
        assert_eq!(count, 11);
        // Every minute of a window counts, also those that did not change: 5 judged + 7 late.
        let minutes = [m(30, 5, false), m(33, 7, true)];
        let (start, count) = busiest_window(&minutes, at(60), 6).unwrap();
        assert!((at(28)..=at(30)).contains(&start), "{start}");
        assert_eq!(count, 12);
    }

    #[test]
    fn a_tie_keeps_the_latest_window_and_unchanged_bursts_are_not_judged_again() {
        let minutes = [m(10, 4, true), m(60, 4, false)];
        assert_eq!(busiest_window(&minutes, at(60), 6), Some((at(55), 4)));
        let minutes = [m(10, 400, false), m(12, 1, false), m(60, 4, true)];
        assert_eq!(busiest_window(&minutes, at(60), 6), Some((at(55), 4)));
    }

    #[test]
    fn a_minute_changed_inside_the_current_window_is_judged_there_only() {
        // An easing storm the worker keeps up with: minute 55 was written after the previous tick,
        // and the window ending at 55 held more than the current one, but it was judged already.
        let minutes = [m(50, 100, false), m(55, 10, true), m(60, 1, true)];
        assert_eq!(busiest_window(&minutes, at(60), 6), Some((at(55), 11)));
        // The same minute once it has left the window is judged by the windows holding it.
        let minutes = [m(50, 100, false), m(54, 10, true), m(60, 1, true)];
        assert_eq!(busiest_window(&minutes, at(60), 6), Some((at(50), 110)));
    }
}
