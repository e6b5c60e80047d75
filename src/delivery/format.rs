//! The bodies a sink's format makes of an alert, from the alert as the outbox keeps it
//! ([`crate::model::alerting::AlertBody`]). Each is a function of the stored alert alone, so
//! every attempt of a delivery sends the same body.
//!
//! - `standard`: `{"type": "alert.fired", "timestamp", "data": <the alert>}`;
//! - `alertmanager`: Prometheus Alertmanager's webhook body, version 4, one firing alert per
//!   request, so receivers written for Alertmanager take it unchanged;
//! - `slack`: a Slack incoming-webhook message.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::alerting::Format;

/// The stored alert, as far as the formats read it: of an event, or of a window.
#[derive(Debug, Deserialize)]
struct Alert {
    id: String,
    rule: Rule,
    event: Option<Event>,
    window: Option<Window>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    id: String,
    version: u32,
}

#[derive(Debug, Deserialize)]
struct Window {
    city: String,
    event_type: String,
    resolution: String,
    window_start: String,
    event_count: u64,
}

/// What the formats say of an alert, event or window alike.
struct Said<'a> {
    city: &'a str,
    event_type: &'a str,
    /// The event's severity, or `window` for a window alert.
    severity: &'a str,
    at: &'a str,
    summary: String,
    description: String,
    labels: Vec<(&'static str, String)>,
}

impl Alert {
    fn said(&self) -> Option<Said<'_>> {
        if let Some(e) = &self.event {
            return Some(Said {
                city: &e.city,
                event_type: &e.event_type,
                severity: &e.severity,
                at: &e.timestamp,
                summary: format!("{} {} in {}", e.severity, e.event_type, e.city),
                description: e.description.clone(),
                labels: vec![("event_id", e.event_id.clone())],
            });
        }
        let w = self.window.as_ref()?;
        Some(Said {
            city: &w.city,
            event_type: &w.event_type,
            severity: "window",
            at: &w.window_start,
            summary: format!("{} {} events in {}", w.event_count, w.event_type, w.city),
            description: format!(
                "{} {} events in {}'s {} window from {}",
                w.event_count, w.event_type, w.city, w.resolution, w.window_start
            ),
            labels: vec![
                ("resolution", w.resolution.clone()),
                ("window_start", w.window_start.clone()),
            ],
        })
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    event_id: String,
    city: String,
    event_type: String,
    severity: String,
    timestamp: String,
    description: String,
}

/// The body `format` makes of the stored alert `alert` for the sink `sink`.
pub fn body(format: Format, sink: &str, alert: &str) -> Vec<u8> {
    let parsed: Option<Alert> = serde_json::from_str(alert).ok();
    let said = parsed.as_ref().and_then(|a| Some((a, a.said()?)));
    let value = match (format, said) {
        (Format::Standard, said) => {
            let timestamp = said.map(|(_, s)| s.at.to_owned()).unwrap_or_default();
            // The stored alert goes out as it is, not parsed and written again.
            return format!(
                r#"{{"type":"alert.fired","timestamp":{},"data":{alert}}}"#,
                Value::String(timestamp)
            )
            .into_bytes();
        }
        (Format::Alertmanager, Some((a, said))) => alertmanager(sink, a, &said),
        (Format::Slack, Some((a, said))) => slack(a, &said),
        (_, None) => json!({ "text": "an alert that could not be read", "alert": alert }),
    };
    value.to_string().into_bytes()
}

/// Alertmanager's webhook body (version 4) holding one firing alert: its labels are the
/// rule (`alertname`), the city, the type and the severity (`window` for a window alert);
/// its fingerprint the alert's id.
fn alertmanager(sink: &str, a: &Alert, said: &Said<'_>) -> Value {
    let mut labels = json!({
        "alertname": a.rule.id,
        "rule_version": a.rule.version.to_string(),
        "city": said.city,
        "event_type": said.event_type,
        "severity": said.severity,
    });
    for (name, value) in &said.labels {
        labels[*name] = Value::String(value.clone());
    }
    let group = json!({ "alertname": a.rule.id, "city": said.city });
    let annotations = json!({ "summary": said.summary, "description": said.description });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", city=\"{}\"}}", a.rule.id, said.city),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": sink,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": said.at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": a.id.replace('-', "").chars().take(16).collect::<String>(),
        }],
    })
}

/// A Slack message: one line of text, and the same as a block with the details.
fn slack(a: &Alert, said: &Said<'_>) -> Value {
    let rule = format!("{}@{}", a.rule.id, a.rule.version);
    let text = format!(
        "{}: {} ({}, rule {rule})",
        said.summary, said.description, said.at
    );
    let detail = format!(
        "*{}*\n{}\n`{}` · rule `{rule}` · alert `{}`",
        said.summary, said.description, said.at, a.id
    );
    json!({
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": detail } }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str = r#"{"id":"3e7a8349-00b4-5b2d-b312-4a07aa35410a","rule":{"id":"severity-high","version":1},"event":{"event_id":"e-1","city":"Chicago","event_type":"construction","severity":"high","timestamp":"2026-12-04T17:06:09.163Z","description":"high construction work in progress"}}"#;

    fn parsed(format: Format) -> Value {
        serde_json::from_slice(&body(format, "ops", ALERT)).unwrap()
    }

    #[test]
    fn a_standard_body_wraps_the_alert_as_stored() {
        let body = parsed(Format::Standard);
        assert_eq!(body["type"], "alert.fired");
        assert_eq!(body["timestamp"], "2026-12-04T17:06:09.163Z");
        assert_eq!(body["data"], serde_json::from_str::<Value>(ALERT).unwrap());
    }

    #[test]
    fn an_alertmanager_body_is_version_4_with_one_firing_alert() {
        let body = parsed(Format::Alertmanager);
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "ops");
        assert_eq!(
            body["groupKey"],
            "{}:{alertname=\"severity-high\", city=\"Chicago\"}"
        );
        let alert = &body["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "severity-high");
        assert_eq!(alert["labels"]["severity"], "high");
        assert_eq!(alert["startsAt"], "2026-12-04T17:06:09.163Z");
        assert_eq!(alert["fingerprint"], "3e7a834900b45b2d");
        assert_eq!(body["alerts"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_window_alert_reads_in_every_format() {
        let window = r#"{"id":"3e7a8349-00b4-5b2d-b312-4a07aa35410a","rule":{"id":"boston-incidents","version":2},"window":{"city":"Boston","event_type":"incident","resolution":"5m","window_start":"2026-12-04T17:05:00Z","window_end":"2026-12-04T17:10:00Z","event_count":3}}"#;
        let am: Value = serde_json::from_slice(&body(Format::Alertmanager, "ops", window)).unwrap();
        let labels = &am["alerts"][0]["labels"];
        assert_eq!(labels["alertname"], "boston-incidents");
        assert_eq!(labels["resolution"], "5m");
        assert_eq!(labels["severity"], "window");
        assert_eq!(am["alerts"][0]["startsAt"], "2026-12-04T17:05:00Z");
        let slack: Value = serde_json::from_slice(&body(Format::Slack, "ops", window)).unwrap();
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("3 incident events in Boston")
        );
        let standard: Value =
            serde_json::from_slice(&body(Format::Standard, "ops", window)).unwrap();
        assert_eq!(standard["timestamp"], "2026-12-04T17:05:00Z");
        assert_eq!(standard["data"]["window"]["event_count"], 3);
    }

    #[test]
    fn a_slack_body_has_text_and_a_block() {
        let body = parsed(Format::Slack);
        let text = body["text"].as_str().unwrap();
        assert!(
            text.starts_with("high construction in Chicago: high construction work"),
            "{text}"
        );
        assert_eq!(body["blocks"][0]["type"], "section");
    }
}
