//! Alert rules and the sinks alerts are delivered to, as data: the rules file (`--rules`),
//! validated whole, and what an event fires under it. No I/O.
//!
//! An alert is one rule firing for one subject (today an event), so its id is a function of
//! the rule's id and the event's key ([`alert_id`]), and a delivery is one alert for one sink,
//! its id a function of the alert's and the sink's ([`delivery_id`]). Replaying the same events
//! under the same rules therefore makes the same alerts and deliveries with the same ids, and a
//! receiver can drop duplicates by `webhook-id`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::EventType;
use super::event::{City, CityEvent, Severity};
use super::results::SeverityCounts;
use super::{EventTime, Span};

/// Most rules a file may hold.
pub const MAX_RULES: usize = 256;
/// Most sinks a file may hold.
pub const MAX_SINKS: usize = 32;
/// Most cities or types one rule may name.
pub const MAX_RULE_FILTER: usize = 64;
/// Longest rule id or sink name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest rules file accepted, in bytes.
pub const MAX_RULES_FILE_BYTES: usize = 256 * 1024;

/// The namespace of alert and delivery ids (UUID v5).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_5c2e_8a0b_4f7e_9d3a_51c4_e2b7_a901);

/// Which rule, at which version, made an alert.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    pub id: String,
    pub version: u32,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

impl RuleRef {
    /// Parses `id@version`, as [`Display`](fmt::Display) writes it.
    pub fn parse(s: &str) -> Option<RuleRef> {
        let (id, version) = s.rsplit_once('@')?;
        Some(RuleRef {
            id: id.to_owned(),
            version: version.parse().ok()?,
        })
    }
}

/// An alert rule, of the listed cities and types (all when a list is empty). A per-event rule
/// (`window` is `None`): an event at or above `severity` is an alert. A window rule: a window
/// of one city and type at the resolution `window.resolution` whose events at or above
/// `severity` number `window.count` or more is an alert, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub version: u32,
    pub severity: Severity,
    pub cities: Vec<City>,
    pub types: Vec<EventType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowCondition>,
}

/// What a window rule counts: the resolution of its windows, and how many events make an
/// alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowCondition {
    #[serde(serialize_with = "span_name")]
    pub resolution: Span,
    pub count: u64,
}

fn span_name<S: serde::Serializer>(span: &Span, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(span)
}

/// One window of one city and type, with what it holds after a write.
#[derive(Debug, Clone, Copy)]
pub struct WindowState<'a> {
    pub city: &'a str,
    pub event_type: EventType,
    pub resolution: Span,
    pub start: EventTime,
    pub counts: SeverityCounts,
}

impl Rule {
    pub fn reference(&self) -> RuleRef {
        RuleRef {
            id: self.id.clone(),
            version: self.version,
        }
    }

    /// Whether the per-event rule makes `e` an alert.
    pub fn matches(&self, e: &CityEvent) -> bool {
        self.window.is_none()
            && e.severity >= self.severity
            && self.covers(e.city.as_str(), e.event_type)
    }

    fn covers(&self, city: &str, event_type: EventType) -> bool {
        (self.cities.is_empty() || self.cities.iter().any(|c| c.as_str() == city))
            && (self.types.is_empty() || self.types.contains(&event_type))
    }

    /// Whether the window rule makes `w` an alert: its events at or above the severity reach
    /// the count.
    pub fn matches_window(&self, w: &WindowState<'_>) -> bool {
        let Some(condition) = self.window else {
            return false;
        };
        let counted: u64 = Severity::ALL
            .iter()
            .filter(|s| **s >= self.severity)
            .map(|s| w.counts.get(*s))
            .sum();
        condition.resolution == w.resolution
            && counted >= condition.count
            && self.covers(w.city, w.event_type)
    }

    /// The seed's query 3: every high or critical event.
    pub fn default_rule() -> Rule {
        Rule {
            id: DEFAULT_RULE_ID.to_owned(),
            version: 1,
            severity: Severity::High,
            cities: Vec::new(),
            types: Vec::new(),
            window: None,
        }
    }
}

/// The id of the rule in force when no rules file is given.
pub const DEFAULT_RULE_ID: &str = "severity-high";

/// How a sink's requests are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The alert as JSON, signed as Standard Webhooks prescribe.
    Standard,
    /// Prometheus Alertmanager's webhook body (version 4).
    Alertmanager,
    /// A Slack incoming-webhook message.
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Alertmanager => "alertmanager",
            Format::Slack => "slack",
        }
    }
}

/// A Standard Webhooks signing secret (`whsec_<base64>`): its key bytes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Parses `whsec_<base64>` (the key is 24 to 64 bytes).
    pub fn parse(s: &str) -> Result<Secret, RulesError> {
        let bad = || RulesError::Secret;
        let key = BASE64
            .decode(s.trim().strip_prefix("whsec_").ok_or_else(bad)?)
            .map_err(|_| bad())?;
        if !(24..=64).contains(&key.len()) {
            return Err(bad());
        }
        Ok(Secret(key))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where alerts go: a URL, the secret its requests are signed with, a format, and which rules'
/// alerts it takes (all when `rules` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub name: String,
    pub url: String,
    pub secret: Option<Secret>,
    pub format: Format,
    pub rules: Vec<String>,
}

impl SinkConfig {
    pub fn takes(&self, rule: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r == rule)
    }
}

/// Why a rules file was refused. The rules in force stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("the rules file is {0} bytes long, at most {MAX_RULES_FILE_BYTES} are allowed")]
    TooLong(usize),
    #[error("{0}")]
    Syntax(String),
    #[error("{what} {name:?}: {why}")]
    Invalid {
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("a rules file has at most {MAX_RULES} rules and {MAX_SINKS} sinks")]
    TooMany,
    #[error("a sink's secret is `whsec_` and the base64 of a 24 to 64 byte key")]
    Secret,
}

/// The rules in force and the sinks their alerts go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerting {
    pub rules: Vec<Rule>,
    pub sinks: Vec<SinkConfig>,
    /// Per rule, in order: its reference and the sinks that take it, worked out once, since
    /// every alert needs them.
    routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    rule: Arc<RuleRef>,
    sinks: Vec<String>,
}

impl Default for Alerting {
    /// The seed's rule and no sinks.
    fn default() -> Self {
        Alerting::new(vec![Rule::default_rule()], Vec::new())
    }
}

/// The alerts an event fires. Most events fire none or one, which it holds without an
/// allocation.
pub type FiredAlerts = smallvec::SmallVec<[Fired; 1]>;

/// One rule firing for one event: the alert, and the sinks it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub rule: Arc<RuleRef>,
    /// The alert's id; only worked out when a sink takes the rule (nothing else needs it).
    pub alert_id: Option<Uuid>,
    /// Delivery id and sink name, one per sink that takes the rule.
    pub deliveries: Vec<(Uuid, String)>,
}

impl Alerting {
    /// The sinks' names, in the order of the file.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name.clone()).collect()
    }

    /// Parses and validates a rules file (TOML; see docs/ALERTING.md).
    pub fn parse(text: &str) -> Result<Alerting, RulesError> {
        if text.len() > MAX_RULES_FILE_BYTES {
            return Err(RulesError::TooLong(text.len()));
        }
        let file: File = toml::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        file.validate()
    }

    fn new(rules: Vec<Rule>, sinks: Vec<SinkConfig>) -> Alerting {
        let routes = rules
            .iter()
            .map(|r| Route {
                rule: Arc::new(r.reference()),
                sinks: sinks
                    .iter()
                    .filter(|s| s.takes(&r.id))
                    .map(|s| s.name.clone())
                    .collect(),
            })
            .collect();
        Alerting {
            rules,
            sinks,
            routes,
        }
    }

    /// Adds sinks given on the command line (`--webhook`), after the file's.
    pub fn with_sinks(mut self, sinks: Vec<SinkConfig>) -> Result<Alerting, RulesError> {
        self.sinks.extend(sinks);
        check_sinks(&self.sinks, &self.rules)?;
        Ok(Alerting::new(self.rules, self.sinks))
    }

    /// The alerts `event` fires: one per rule it matches, in file order.
    pub fn fire(&self, event: &CityEvent) -> FiredAlerts {
        self.rules
            .iter()
            .zip(&self.routes)
            .filter(|(rule, _)| rule.matches(event))
            .map(|(rule, route)| {
                let alert = (!route.sinks.is_empty()).then(|| alert_id(&rule.id, event));
                let deliveries = alert.map_or_else(Vec::new, |alert| {
                    let to = |s: &String| (delivery_id(alert, s), s.clone());
                    route.sinks.iter().map(to).collect()
                });
                Fired {
                    rule: route.rule.clone(),
                    alert_id: alert,
                    deliveries,
                }
            })
            .collect()
    }

    /// Refuses a window rule whose resolution is not one of `kept`: it would never fire.
    pub fn check_windows(&self, kept: &[Span]) -> Result<(), RulesError> {
        let never = self
            .rules
            .iter()
            .find(|r| r.window.is_some_and(|w| !kept.contains(&w.resolution)));
        match never {
            None => Ok(()),
            Some(r) => {
                let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
                Err(invalid(
                    "rule",
                    &r.id,
                    &format!("its window is not a resolution kept ({})", names.join(", ")),
                ))
            }
        }
    }

    /// Whether a window rule has a sink: only then do windows need looking at.
    pub fn watches_windows(&self) -> bool {
        self.rules
            .iter()
            .zip(&self.routes)
            .any(|(r, route)| r.window.is_some() && !route.sinks.is_empty())
    }

    /// The alerts a window fires after a write: one per window rule it meets that a sink
    /// takes (an alert no sink takes goes nowhere, and is not kept). Written only if absent,
    /// each is made once however often the window is written after.
    pub fn fire_window(&self, w: &WindowState<'_>) -> Vec<Fired> {
        self.rules
            .iter()
            .zip(&self.routes)
            .filter(|(rule, route)| !route.sinks.is_empty() && rule.matches_window(w))
            .map(|(rule, route)| {
                let alert = window_alert_id(&rule.id, w);
                let to = |s: &String| (delivery_id(alert, s), s.clone());
                Fired {
                    rule: route.rule.clone(),
                    alert_id: Some(alert),
                    deliveries: route.sinks.iter().map(to).collect(),
                }
            })
            .collect()
    }

    /// What `GET /api/v1/rules` shows: everything but the secrets.
    pub fn public(&self) -> PublicAlerting {
        PublicAlerting {
            rules: self.rules.clone(),
            sinks: self
                .sinks
                .iter()
                .map(|s| PublicSink {
                    name: s.name.clone(),
                    url: redact_url(&s.url),
                    format: s.format,
                    signed: s.secret.is_some(),
                    rules: s.rules.clone(),
                })
                .collect(),
        }
    }
}

/// An alert as the outbox keeps it and a `standard` sink receives it (as `data`).
#[derive(Debug, Serialize)]
pub struct AlertBody<'a> {
    pub id: Uuid,
    pub rule: &'a RuleRef,
    pub event: &'a CityEvent,
}

impl AlertBody<'_> {
    pub fn to_json(&self) -> String {
        // Ids, plain strings, enums and a timestamp string: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The rules an event matched, as stored with its alert: `id@version`, comma separated.
pub fn rules_text(fired: &[Fired]) -> String {
    match fired {
        [one] => one.rule.to_string(),
        many => {
            let refs: Vec<String> = many.iter().map(|f| f.rule.to_string()).collect();
            refs.join(",")
        }
    }
}

/// The rules of a stored alert, from [`rules_text`]; what cannot be read is left out.
pub fn rules_from_text(text: &str) -> Vec<RuleRef> {
    text.split(',').filter_map(RuleRef::parse).collect()
}

/// An alert's id: the rule's id and the event's key (id and time), hashed.
pub fn alert_id(rule: &str, event: &CityEvent) -> Uuid {
    let name = format!(
        "event\n{rule}\n{}\n{}",
        event.event_id,
        event.timestamp.as_millis()
    );
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// A window alert's id: the rule's id and the window's city, type, resolution and start.
pub fn window_alert_id(rule: &str, w: &WindowState<'_>) -> Uuid {
    let name = format!(
        "window\n{rule}\n{}\n{}\n{}\n{}",
        w.city,
        w.event_type,
        w.resolution.as_millis(),
        w.start.as_millis()
    );
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// A window alert as the outbox keeps it and a `standard` sink receives it (as `data`).
#[derive(Debug, Serialize)]
pub struct WindowAlertBody<'a> {
    pub id: Uuid,
    pub rule: &'a RuleRef,
    pub window: WindowBody<'a>,
}

/// The window of a window alert.
#[derive(Debug, Serialize)]
pub struct WindowBody<'a> {
    pub city: &'a str,
    pub event_type: EventType,
    #[serde(serialize_with = "span_name")]
    pub resolution: Span,
    pub window_start: EventTime,
    pub window_end: EventTime,
    /// Its events at or above the rule's severity when the alert was made.
    pub event_count: u64,
}

impl WindowAlertBody<'_> {
    pub fn to_json(&self) -> String {
        // Ids, plain strings, enums and timestamp strings: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A delivery's id: the alert's id and the sink's name, hashed.
pub fn delivery_id(alert: Uuid, sink: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("{alert}\n{sink}").as_bytes())
}

/// A URL with its query and any credentials left out: Slack's and others' URLs carry their
/// token in the path, so only the scheme, host and port are shown.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_owned();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// The rules and sinks as served, secrets and URL paths left out.
#[derive(Debug, Clone, Serialize)]
pub struct PublicAlerting {
    pub rules: Vec<Rule>,
    pub sinks: Vec<PublicSink>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublicSink {
    pub name: String,
    /// Scheme, host and port only.
    pub url: String,
    pub format: Format,
    /// Whether requests are signed.
    pub signed: bool,
    pub rules: Vec<String>,
}

/// The rules file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    sinks: Vec<FileSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    id: String,
    #[serde(default = "one")]
    version: u32,
    severity: Option<Severity>,
    #[serde(default)]
    cities: Vec<String>,
    #[serde(default)]
    types: Vec<EventType>,
    /// A window rule's resolution (`5m`, `1h`, `1d`).
    window: Option<String>,
    /// A window rule's count.
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    name: String,
    url: String,
    secret: Option<String>,
    #[serde(default = "standard")]
    format: Format,
    #[serde(default)]
    rules: Vec<String>,
}

fn one() -> u32 {
    1
}

fn standard() -> Format {
    Format::Standard
}

impl File {
    fn validate(self) -> Result<Alerting, RulesError> {
        if self.rules.len() > MAX_RULES || self.sinks.len() > MAX_SINKS {
            return Err(RulesError::TooMany);
        }
        let rules = self
            .rules
            .into_iter()
            .map(FileRule::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids = BTreeSet::new();
        if let Some(r) = rules.iter().find(|r| !ids.insert(r.id.as_str())) {
            return Err(invalid("rule", &r.id, "another rule has this id"));
        }
        let sinks = self
            .sinks
            .into_iter()
            .map(FileSink::validate)
            .collect::<Result<Vec<_>, _>>()?;
        check_sinks(&sinks, &rules)?;
        Ok(Alerting::new(rules, sinks))
    }
}

impl FileRule {
    fn validate(self) -> Result<Rule, RulesError> {
        check_name("rule", &self.id)?;
        let bad = |why: &str| invalid("rule", &self.id, why);
        if self.version == 0 {
            return Err(bad("version starts at 1"));
        }
        if self.cities.len() > MAX_RULE_FILTER || self.types.len() > MAX_RULE_FILTER {
            return Err(bad("a rule names at most 64 cities and 64 types"));
        }
        let cities = self
            .cities
            .iter()
            .map(|c| City::parse(c.as_str()).map_err(|e| bad(&e.to_string())))
            .collect::<Result<_, _>>()?;
        let window = match (&self.window, self.count) {
            (None, None) => None,
            (Some(w), Some(count)) if count >= 1 => Some(WindowCondition {
                resolution: Span::parse(w).map_err(|e| bad(&format!("window: {e}")))?,
                count,
            }),
            _ => {
                return Err(bad(
                    "a window rule has both `window` (5m, 1h, 1d) and `count` (1 or more)",
                ));
            }
        };
        let severity = match (self.severity, window) {
            (Some(s), _) => s,
            (None, Some(_)) => Severity::Low,
            (None, None) => return Err(bad("a per-event rule has a `severity`")),
        };
        Ok(Rule {
            cities,
            id: self.id,
            version: self.version,
            severity,
            types: self.types,
            window,
        })
    }
}

impl FileSink {
    fn validate(self) -> Result<SinkConfig, RulesError> {
        check_name("sink", &self.name)?;
        let secret = self.secret.as_deref().map(Secret::parse).transpose()?;
        Ok(SinkConfig {
            url: check_url(&self.name, self.url)?,
            name: self.name,
            secret,
            format: self.format,
            rules: self.rules,
        })
    }
}

/// Checks a webhook URL: `http` or `https`, with a host.
pub fn check_url(sink: &str, url: String) -> Result<String, RulesError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty() && !r.starts_with('/') && !url.chars().any(char::is_whitespace) =>
        {
            Ok(url)
        }
        _ => Err(invalid(
            "sink",
            sink,
            "url is an http:// or https:// URL with a host",
        )),
    }
}

fn check_sinks(sinks: &[SinkConfig], rules: &[Rule]) -> Result<(), RulesError> {
    if sinks.len() > MAX_SINKS {
        return Err(RulesError::TooMany);
    }
    let mut names = BTreeSet::new();
    for s in sinks {
        if !names.insert(s.name.as_str()) {
            return Err(invalid("sink", &s.name, "another sink has this name"));
        }
        if let Some(r) = s.rules.iter().find(|r| !rules.iter().any(|x| &x.id == *r)) {
            return Err(invalid(
                "sink",
                &s.name,
                &format!("no rule has the id {r:?}"),
            ));
        }
    }
    Ok(())
}

fn check_name(what: &'static str, name: &str) -> Result<(), RulesError> {
    if super::is_plain_name(name, MAX_NAME_BYTES) {
        Ok(())
    } else {
        Err(invalid(
            what,
            name,
            "names are 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'",
        ))
    }
}

fn invalid(what: &'static str, name: &str, why: &str) -> RulesError {
    RulesError::Invalid {
        what,
        name: name.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventTime;

    fn event(city: &str, t: EventType, s: Severity) -> CityEvent {
        CityEvent {
            event_id: "e-1".into(),
            city: City::parse(city).unwrap(),
            event_type: t,
            severity: s,
            timestamp: EventTime::from_millis(1_000),
            description: String::new(),
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn the_default_is_the_seed_rule() {
        let a = Alerting::default();
        let high = a.fire(&event("SF", EventType::Traffic, Severity::High));
        assert_eq!(high.len(), 1);
        assert_eq!(high[0].rule.to_string(), "severity-high@1");
        assert!(
            a.fire(&event("SF", EventType::Traffic, Severity::Medium))
                .is_empty()
        );
    }

    #[test]
    fn a_file_routes_rules_to_sinks_with_stable_ids() {
        let a = Alerting::parse(&format!(
            r#"
            [[rules]]
            id = "seattle-weather"
            version = 3
            severity = "medium"
            cities = ["Seattle"]
            types = ["weather"]
            [[rules]]
            id = "all-high"
            severity = "high"
            [[sinks]]
            name = "storm-desk"
            url = "https://hooks.example/storm?token=x"
            secret = "{SECRET}"
            rules = ["seattle-weather"]
            [[sinks]]
            name = "ops"
            url = "http://127.0.0.1:9/"
            "#
        ))
        .unwrap();
        let fired = a.fire(&event("Seattle", EventType::Weather, Severity::Critical));
        let rules: Vec<_> = fired.iter().map(|f| f.rule.to_string()).collect();
        assert_eq!(rules, ["seattle-weather@3", "all-high@1"]);
        let sinks: Vec<_> = fired[0].deliveries.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(sinks, ["storm-desk", "ops"]);
        assert_eq!(fired[1].deliveries.len(), 1);
        assert_eq!(
            fired,
            a.fire(&event("Seattle", EventType::Weather, Severity::Critical))
        );
        assert_ne!(fired[0].deliveries[0].0, fired[0].deliveries[1].0);
        assert!(
            a.fire(&event("Boston", EventType::Weather, Severity::Medium))
                .is_empty()
        );
        let public = serde_json::to_string(&a.public()).unwrap();
        assert!(
            !public.contains("whsec") && !public.contains("token"),
            "{public}"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let refused = |text: &str| Alerting::parse(text).unwrap_err().to_string();
        assert!(refused("[[rules]]\nid = \"x\"\nseverity = \"huge\"").contains("huge"));
        assert!(refused("[[rules]]\nid = \"x\"\nseverity = \"high\"\ncolor = 1").contains("color"));
        assert!(refused("[[rules]]\nid = \"a b\"\nseverity = \"high\"").contains("names are"));
        let twice = "[[rules]]\nid = \"x\"\nseverity = \"high\"\n".repeat(2);
        assert!(refused(&twice).contains("another rule"));
        let unknown = "[[sinks]]\nname = \"s\"\nurl = \"http://h/\"\nrules = [\"nope\"]";
        assert!(refused(unknown).contains("no rule has the id"));
        let url = "[[sinks]]\nname = \"s\"\nurl = \"ftp://h/\"";
        assert!(refused(url).contains("http://"));
        let secret = "[[sinks]]\nname = \"s\"\nurl = \"http://h/\"\nsecret = \"hunter2\"";
        assert!(refused(secret).contains("whsec_"));
        assert!(!refused(secret).contains("hunter2"));
        let many = "[[rules]]\nid = \"r\"\nseverity = \"high\"\n".repeat(MAX_RULES + 1);
        assert!(Alerting::parse(&many).is_err());
        assert!(matches!(
            Alerting::parse(&" ".repeat(MAX_RULES_FILE_BYTES + 1)),
            Err(RulesError::TooLong(_))
        ));
    }

    #[test]
    fn a_window_rule_fires_once_its_window_holds_enough_events_of_its_severity() {
        let a = Alerting::parse(
            "[[rules]]\nid = \"boston-incidents\"\nwindow = \"5m\"\ncount = 3\nseverity = \"medium\"\n\
             cities = [\"Boston\"]\ntypes = [\"incident\"]\n\
             [[sinks]]\nname = \"desk\"\nurl = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap();
        assert!(a.watches_windows());
        let w = |city, resolution: Span, counts: [u64; 4]| WindowState {
            city,
            event_type: EventType::Incident,
            resolution,
            start: EventTime::from_millis(300_000),
            counts: SeverityCounts(counts),
        };
        let five = Span::from_mins(5);
        assert!(
            a.fire_window(&w("Boston", five, [5, 2, 0, 0])).is_empty(),
            "2 at medium or up"
        );
        let fired = a.fire_window(&w("Boston", five, [0, 1, 1, 1]));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].deliveries.len(), 1);
        assert_eq!(
            fired,
            a.fire_window(&w("Boston", five, [9, 9, 9, 9])),
            "one id per window"
        );
        assert!(a.fire_window(&w("Chicago", five, [0, 3, 0, 0])).is_empty());
        assert!(
            a.fire_window(&w("Boston", Span::from_hours(1), [0, 3, 0, 0]))
                .is_empty()
        );
        let e = event("Boston", EventType::Incident, Severity::Critical);
        assert!(a.fire(&e).is_empty(), "a window rule is no per-event rule");
        assert!(a.check_windows(&[five, Span::from_hours(1)]).is_ok());
        let refused = a
            .check_windows(&[Span::from_hours(1)])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("not a resolution kept (1h)"), "{refused}");
        let half = "[[rules]]\nid = \"w\"\nwindow = \"5m\"\n";
        assert!(
            Alerting::parse(half)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
        let none = "[[rules]]\nid = \"w\"\n";
        assert!(
            Alerting::parse(none)
                .unwrap_err()
                .to_string()
                .contains("severity")
        );
        let without_sinks = Alerting::parse("[[rules]]\nid = \"w\"\nwindow = \"5m\"\ncount = 1\n");
        assert!(!without_sinks.unwrap().watches_windows());
    }

    #[test]
    fn secrets_and_urls_are_never_printed() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert_eq!(
            redact_url("https://user:pw@hooks.slack.com/services/T0/B0/XX?x=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(RuleRef::parse("a-b@12").unwrap().to_string(), "a-b@12");
    }
}
