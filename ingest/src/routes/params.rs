//! Query-string and path parsing for the dashboard API: every bad value is reported in one 400
//! (`details` names each parameter), nothing is silently clamped. An empty value counts as absent,
//! so a dashboard may send `level=` for "any level".

use crate::error::ApiError;
use axum::extract::{Query, rejection::QueryRejection};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use uuid::Uuid;

pub type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

pub struct Params {
    values: HashMap<String, String>,
    errors: Map<String, Value>,
}

impl Params {
    pub fn new(raw: RawQuery) -> Result<Self, ApiError> {
        let Query(values) = raw.map_err(|e| {
            ApiError::validation(
                "the query string cannot be parsed",
                serde_json::json!({ "query": e.body_text() }),
            )
        })?;
        Ok(Self {
            values,
            errors: Map::new(),
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors
            .insert(name.to_string(), Value::String(message.into()));
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&mut self, name: &str, default: i64, min: i64, max: i64) -> i64 {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ if max == i64::MAX => {
                self.fail(name, format!("must be an integer of at least {min}"));
                default
            }
            _ => {
                self.fail(name, format!("must be an integer from {min} to {max}"));
                default
            }
        }
    }

    /// One of `allowed`, `default` when absent.
    pub fn one_of(
        &mut self,
        name: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(raw)) {
            Some(v) => v,
            None => {
                self.fail(name, format!("must be one of {}", allowed.join(", ")));
                default
            }
        }
    }

    /// One of `allowed`, `None` when absent.
    pub fn optional_one_of(
        &mut self,
        name: &str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        self.get(name)?;
        Some(self.one_of(name, allowed, allowed[0]))
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name)?.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => {
                self.fail(name, "must be true or false");
                None
            }
        }
    }

    /// An RFC 3339 timestamp (`2026-11-23T12:00:00Z`).
    pub fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let raw = self.get(name)?;
        match DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.fail(
                    name,
                    "must be an RFC 3339 timestamp, e.g. 2026-11-23T12:00:00Z",
                );
                None
            }
        }
    }

    /// Free text of at most `max_chars` characters.
    pub fn text(&mut self, name: &str, max_chars: usize) -> Option<String> {
        let raw = self.get(name)?.to_string();
        if raw.chars().count() > max_chars {
            self.fail(name, format!("must be at most {max_chars} characters"));
            return None;
        }
        Some(raw)
    }

    /// 400 naming every bad parameter, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.errors.keys().map(String::as_str).collect();
        Err(ApiError::validation(
            format!("invalid query parameter: {}", names.join(", ")),
            Value::Object(self.errors),
        ))
    }
}

/// A path id: 400 unless it is a UUID.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::validation(
            "invalid UUID format",
            serde_json::json!({ "id": "must be a UUID" }),
        )
    })
}
