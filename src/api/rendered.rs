//! Windows rendered as JSON once, not on every request.
//!
//! A window's JSON is fixed by its key and its event count: a window only grows, by events that
//! count in it, each once, and its severities list only appends; the purge deletes it whole, and
//! its span of event time is then past the watermark, so nothing makes it again. A closed window
//! is asked for again and again (the newest windows of a city, a month of hourly history) and
//! never changes, so its rendering is kept, bounded in bytes, and served while the store reports
//! the same count. A window that is still open is rendered again when its count has moved.

use std::sync::Arc;

use metrics::counter;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use serde_json::value::RawValue;

use super::body::{SomeFields, WindowBody, WindowFields};
use crate::model::{City, EventTime, EventType, Resolution, WindowAggregate};

/// Bytes of rendered windows kept by default (`--window-cache-mib`).
pub const DEFAULT_BYTES: u64 = 16 << 20;

/// Which window: its resolution, city, type and start.
#[derive(Clone, PartialEq, Eq, Hash)]
struct WindowId {
    span_ms: i64,
    city: City,
    event_type: EventType,
    start: EventTime,
}

/// A [`WindowId`] borrowed from the window it names, to look it up without a copy of its city;
/// it hashes as the id does (a `City` hashes as its `str`).
#[derive(Hash)]
struct WindowRef<'a> {
    span_ms: i64,
    city: &'a str,
    event_type: EventType,
    start: EventTime,
}

impl Equivalent<WindowId> for WindowRef<'_> {
    fn equivalent(&self, id: &WindowId) -> bool {
        self.span_ms == id.span_ms
            && self.city == id.city.as_str()
            && self.event_type == id.event_type
            && self.start == id.start
    }
}

#[derive(Clone)]
struct Rendered {
    events: u64,
    json: Arc<RawValue>,
}

/// What an entry costs: its JSON, its city, and the map's own share.
#[derive(Clone)]
struct ByLength;

impl Weighter<WindowId, Rendered> for ByLength {
    fn weight(&self, id: &WindowId, rendered: &Rendered) -> u64 {
        (rendered.json.get().len() + id.city.as_str().len() + 96) as u64
    }
}

/// The rendered windows, at most a set number of bytes of them; when full, quick_cache's
/// S3-FIFO lets windows asked for once go before those asked for again.
pub struct RenderedWindows {
    cache: Cache<WindowId, Rendered, ByLength>,
}

impl RenderedWindows {
    /// Keeps at most `bytes` of rendered windows; 0 keeps none.
    pub fn new(bytes: u64) -> Self {
        // The map is sized for windows of about 4 KB; it grows if they are smaller.
        let items = (bytes / 4096).max(1) as usize;
        RenderedWindows {
            cache: Cache::with_weighter(items, bytes, ByLength),
        }
    }

    /// `windows`, each a window of `resolution`, as the API shows them with `fields`; `rollup`
    /// when `resolution` is not the base window (their keys name the resolution).
    pub fn render_all(
        &self,
        windows: &[WindowAggregate],
        resolution: Resolution,
        rollup: bool,
        fields: WindowFields,
    ) -> Result<Vec<Arc<RawValue>>, serde_json::Error> {
        if fields != WindowFields::ALL {
            // Only whole windows are kept; the whole answer of a few fields is (`answers.rs`).
            counter!("citystream_api_windows_rendered_total", "from" => "store")
                .increment(windows.len() as u64);
            let some = |w| SomeFields {
                window: WindowBody::new(w, rollup.then_some(resolution)),
                fields,
            };
            return windows
                .iter()
                .map(|w| serde_json::value::to_raw_value(&some(w)).map(Arc::from))
                .collect();
        }
        let mut kept = 0;
        let rendered = windows
            .iter()
            .map(|w| self.render(w, resolution, rollup, &mut kept))
            .collect::<Result<Vec<_>, _>>()?;
        counter!("citystream_api_windows_rendered_total", "from" => "cache").increment(kept);
        counter!("citystream_api_windows_rendered_total", "from" => "store")
            .increment(rendered.len() as u64 - kept);
        Ok(rendered)
    }

    /// One window; `kept` counts those served from their rendering.
    fn render(
        &self,
        w: &WindowAggregate,
        resolution: Resolution,
        rollup: bool,
        kept: &mut u64,
    ) -> Result<Arc<RawValue>, serde_json::Error> {
        let seek = WindowRef {
            span_ms: resolution.span.as_millis(),
            city: w.city.as_str(),
            event_type: w.event_type,
            start: w.window_start,
        };
        if let Some(rendered) = self.cache.get(&seek)
            && rendered.events == w.event_count
        {
            *kept += 1;
            return Ok(rendered.json);
        }
        let body = WindowBody::new(w, rollup.then_some(resolution));
        let json: Arc<RawValue> = serde_json::value::to_raw_value(&body)?.into();
        let id = WindowId {
            span_ms: seek.span_ms,
            city: w.city.clone(),
            event_type: w.event_type,
            start: w.window_start,
        };
        self.cache.insert(
            id,
            Rendered {
                events: w.event_count,
                json: json.clone(),
            },
        );
        Ok(json)
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

impl Default for RenderedWindows {
    fn default() -> Self {
        RenderedWindows::new(DEFAULT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Resolutions, Severity, SeverityCounts, Span};

    fn window(city: &str, start_min: i64, severities: &[Severity]) -> WindowAggregate {
        let start = EventTime::from_millis(start_min * 60_000);
        let mut counts = SeverityCounts::default();
        for s in severities {
            counts.0[s.index()] += 1;
        }
        WindowAggregate {
            city: City::parse(city).expect("a city"),
            event_type: "traffic".parse::<EventType>().expect("a type"),
            window_start: start,
            window_end: start.saturating_add(Span::from_millis(300_000)),
            event_count: severities.len() as u64,
            severities: severities.iter().copied().collect(),
            severity_counts: counts,
        }
    }

    fn one(
        windows: &RenderedWindows,
        w: &WindowAggregate,
        resolution: Resolution,
        rollup: bool,
    ) -> Arc<RawValue> {
        let mut all = windows
            .render_all(
                std::slice::from_ref(w),
                resolution,
                rollup,
                WindowFields::ALL,
            )
            .expect("render");
        all.pop().expect("one window")
    }

    fn base() -> Resolution {
        Resolutions::default().base()
    }

    fn fresh(w: &WindowAggregate) -> String {
        serde_json::to_string(&WindowBody::new(w, None)).expect("json")
    }

    #[test]
    fn every_field_is_the_whole_window_and_a_few_are_those_in_its_order() {
        let w = window("Chicago", 10, &[Severity::Low, Severity::High]);
        let whole: serde_json::Value = serde_json::from_str(&fresh(&w)).expect("json");
        let names: Vec<&str> = whole
            .as_object()
            .expect("an object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(names, WindowFields::NAMES);
        let windows = RenderedWindows::default();
        let render = |fields| {
            let all = windows.render_all(std::slice::from_ref(&w), base(), false, fields);
            all.expect("render")
                .pop()
                .expect("one window")
                .get()
                .to_owned()
        };
        assert_eq!(render(WindowFields::ALL), fresh(&w));
        let every = SomeFields {
            window: WindowBody::new(&w, None),
            fields: WindowFields::ALL,
        };
        assert_eq!(serde_json::to_string(&every).expect("json"), fresh(&w));
        let some =
            WindowFields::parse(" severity_counts,window_start ,window_start").expect("fields");
        assert_eq!(
            render(some),
            format!(
                r#"{{"window_start":{},"severity_counts":{}}}"#,
                whole["window_start"], whole["severity_counts"]
            )
        );
        for bad in ["", "window_start,", "Window_Start", "severities;city"] {
            let refused = WindowFields::parse(bad).expect_err(bad);
            assert!(refused.contains("partition_key, city"), "{refused}");
        }
    }

    #[test]
    fn a_window_is_rendered_again_only_when_its_count_moved() {
        let windows = RenderedWindows::default();
        let mut w = window("Chicago", 10, &[Severity::Low, Severity::High]);
        let first = one(&windows, &w, base(), false);
        assert_eq!(first.get(), fresh(&w));
        assert!(Arc::ptr_eq(&first, &one(&windows, &w, base(), false)));
        w.severities.push(Severity::Critical);
        w.severity_counts.0[Severity::Critical.index()] += 1;
        w.event_count += 1;
        let grown = one(&windows, &w, base(), false);
        assert_eq!(grown.get(), fresh(&w));
        assert_ne!(grown.get(), first.get());
    }

    #[test]
    fn the_same_start_of_another_city_or_resolution_is_another_window() {
        let windows = RenderedWindows::default();
        let chicago = window("Chicago", 60, &[Severity::Low]);
        let boston = window("Boston", 60, &[Severity::Low]);
        let hour = Resolutions::default()
            .named("1h")
            .expect("an hourly resolution");
        one(&windows, &chicago, base(), false);
        let other = one(&windows, &boston, base(), false);
        assert_eq!(other.get(), fresh(&boston));
        let rolled = one(&windows, &chicago, hour, true);
        let expected = serde_json::to_string(&WindowBody::new(&chicago, Some(hour))).expect("json");
        assert_eq!(rolled.get(), expected);
    }

    #[test]
    fn the_bytes_kept_stay_within_the_bound() {
        let bound = 64 * 1024;
        let windows = RenderedWindows::new(bound);
        let severities = vec![Severity::Medium; 1000];
        for start in 0..500 {
            let w = window("Chicago", start * 5, &severities);
            let json = one(&windows, &w, base(), false);
            assert_eq!(
                json.get(),
                fresh(&w),
                "a window past the bound is still served"
            );
        }
        assert!(windows.weight() <= bound, "{} > {bound}", windows.weight());
        assert!(windows.weight() > bound / 4, "the cache keeps windows");
    }
}
