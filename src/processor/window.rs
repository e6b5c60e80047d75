//! Query 2's rule: tumbling windows on event time per (city, event_type), closed by the
//! watermark. A pure function of an event's time and its partition's watermark; the window
//! values themselves are sums the store keeps (see [`crate::store`]).
//!
//! A window `[start, end)` closes once the partition's watermark reaches `end`: an event whose
//! window has closed is late, recorded as such and not aggregated.

use crate::model::{EventTime, Placement, Span};

/// The window rule: a size, and the windows it cuts event time into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub size: Span,
}

impl Windows {
    /// Where an event at `t` counts, given its partition's watermark before it.
    pub fn place(&self, t: EventTime, watermark: Option<EventTime>) -> Placement {
        let start = t.window_start(self.size);
        let end = start.saturating_add(self.size);
        match watermark {
            Some(wm) if end <= wm => Placement::Late { watermark: wm },
            _ => Placement::Window { start, end },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(m: i64) -> EventTime {
        EventTime::from_millis(m * 60_000)
    }

    #[test]
    fn an_event_counts_in_its_window_until_the_watermark_reaches_the_window_end() {
        let windows = Windows {
            size: Span::from_mins(5),
        };
        assert_eq!(
            windows.place(minute(7), None),
            Placement::Window {
                start: minute(5),
                end: minute(10)
            }
        );
        // A watermark one millisecond before the end leaves the window open.
        let just_before = EventTime::from_millis(minute(10).as_millis() - 1);
        assert!(matches!(
            windows.place(minute(7), Some(just_before)),
            Placement::Window { .. }
        ));
        // At exactly the end it is closed.
        assert_eq!(
            windows.place(minute(7), Some(minute(10))),
            Placement::Late {
                watermark: minute(10)
            }
        );
    }

    #[test]
    fn windows_floor_also_before_the_epoch() {
        let windows = Windows {
            size: Span::from_mins(5),
        };
        assert_eq!(
            windows.place(EventTime::from_millis(-1), None),
            Placement::Window {
                start: minute(-5),
                end: minute(0)
            }
        );
    }
}
