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

/// The stored alert, as far as the formats read it.
#[derive(Debug, Deserialize)]
struct Alert {
    id: String,
    rule: Rule,
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Rule {
    id: String,
    version: u32,
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
    let value = match (format, parsed) {
        (Format::Standard, parsed) => {
            let timestamp = parsed.map(|a| a.event.timestamp).unwrap_or_default();
            // The stored alert goes out as it is, not parsed and written again.
            return format!(
                r#"{{"type":"alert.fired","timestamp":{},"data":{alert}}}"#,
                Value::String(timestamp)
            )
            .into_bytes();
        }
        (Format::Alertmanager, Some(a)) => alertmanager(sink, &a),
        (Format::Slack, Some(a)) => slack(&a),
        (_, None) => json!({ "text": "an alert that could not be read", "alert": alert }),
    };
    value.to_string().into_bytes()
}

/// Alertmanager's webhook body (version 4) holding one firing alert: its labels are the
/// rule (`alertname`), the city, the type and the severity; its fingerprint the alert's id.
fn alertmanager(sink: &str, a: &Alert) -> Value {
    let e = &a.event;
    let labels = json!({
        "alertname": a.rule.id,
        "rule_version": a.rule.version.to_string(),
        "city": e.city,
        "event_type": e.event_type,
        "severity": e.severity,
        "event_id": e.event_id,
    });
    let group = json!({ "alertname": a.rule.id, "city": e.city });
    let summary = format!("{} {} in {}", e.severity, e.event_type, e.city);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", city=\"{}\"}}", a.rule.id, e.city),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": sink,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": { "summary": summary, "description": e.description },
        "externalURL": "",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": { "summary": summary, "description": e.description },
            "startsAt": e.timestamp,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": a.id.replace('-', "").chars().take(16).collect::<String>(),
        }],
    })
}

/// A Slack message: one line of text, and the same as a block with the details.
fn slack(a: &Alert) -> Value {
    let e = &a.event;
    let text = format!(
        "{} {} in {}: {} ({}, rule {}@{})",
        e.severity, e.event_type, e.city, e.description, e.timestamp, a.rule.id, a.rule.version
    );
    let detail = format!(
        "*{}* {} in *{}*\n{}\n`{}` · rule `{}@{}` · alert `{}`",
        e.severity,
        e.event_type,
        e.city,
        e.description,
        e.timestamp,
        a.rule.id,
        a.rule.version,
        a.id
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
    fn a_slack_body_has_text_and_a_block() {
        let body = parsed(Format::Slack);
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("high construction in Chicago"), "{text}");
        assert_eq!(body["blocks"][0]["type"], "section");
    }
}
