//! The window part of an aggregate step's spec.
//!
//! ```yaml
//! window: { tumbling: 1m }   # or { hopping: { size: 1m, slide: 10s } } or { session: { gap: 30s } }
//! watermark: { max_out_of_orderness: 10s, idle_timeout: 30s, max_ahead: 1h }
//! allowed_lateness: 0s
//! output: append             # append | update
//! ```

use std::time::Duration;

use serde::Deserialize;

/// A hopping window may span at most this many slides: each of its results
/// merges that many panes, and each new pane registers that many windows.
pub const MAX_PANES_PER_WINDOW: u64 = 1000;

/// Default of [`WatermarkSpec::idle_timeout`].
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`WatermarkSpec::max_ahead`]: well past any producer's clock
/// skew, and short enough that one record stamped in the future (a local
/// time written as UTC, a unit mix-up) is refused rather than moving the
/// watermark hours ahead and making every later record late.
pub const DEFAULT_MAX_AHEAD: Duration = Duration::from_secs(3600);

/// How records are windowed, when results are due and what is emitted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub window: WindowKind,
    pub watermark: WatermarkSpec,
    /// How long past its end (in event time, measured by the watermark) a
    /// window stays open for out-of-order records. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Duration,
    #[serde(default)]
    pub output: OutputMode,
}

/// Written as a map with exactly one entry, `{ tumbling: 1m }`, whatever the
/// format (YAML libraries disagree on how to spell an enum otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WindowKindRepr")]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of this size.
    Tumbling(Duration),
    /// Windows of `size` every `slide`; `slide` must divide `size`.
    Hopping { size: Duration, slide: Duration },
    /// Per key, activity separated by less than `gap`.
    Session { gap: Duration },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowKindRepr {
    #[serde(default, with = "humantime_serde")]
    tumbling: Option<Duration>,
    #[serde(default)]
    hopping: Option<HoppingRepr>,
    #[serde(default)]
    session: Option<SessionRepr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoppingRepr {
    #[serde(with = "humantime_serde")]
    size: Duration,
    #[serde(with = "humantime_serde")]
    slide: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRepr {
    #[serde(with = "humantime_serde")]
    gap: Duration,
}

impl TryFrom<WindowKindRepr> for WindowKind {
    type Error = String;

    fn try_from(r: WindowKindRepr) -> Result<Self, String> {
        match (r.tumbling, r.hopping, r.session) {
            (Some(size), None, None) => Ok(WindowKind::Tumbling(size)),
            (None, Some(HoppingRepr { size, slide }), None) => {
                Ok(WindowKind::Hopping { size, slide })
            }
            (None, None, Some(SessionRepr { gap })) => Ok(WindowKind::Session { gap }),
            _ => Err("expected exactly one of `tumbling`, `hopping` or `session`".to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// Bound on disorder: a partition's watermark trails the largest event
    /// time seen in it by this much.
    #[serde(with = "humantime_serde")]
    pub max_out_of_orderness: Duration,
    /// A partition without records for this long (processing time) stops
    /// holding the watermark back. Default 30 s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Horizon: a record whose event time is more than this past the
    /// processing time of its batch is dead-lettered (`event time too far
    /// ahead`) and neither moves the watermark nor reaches the state.
    /// Default 1h.
    #[serde(default = "default_max_ahead", with = "humantime_serde")]
    pub max_ahead: Duration,
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

fn default_max_ahead() -> Duration {
    DEFAULT_MAX_AHEAD
}

/// What a window emits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// One final result per window and key.
    #[default]
    Append,
    /// Also an intermediate result whenever a window's accumulator changes.
    Update,
}

/// A [`WindowSpec`] that [`WindowSpec::validate`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// The spec in milliseconds, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Tumbling (`slide == size`) or hopping: state is per `slide`-long pane.
    Panes {
        size: i64,
        slide: i64,
    },
    Session {
        gap: i64,
    },
}

fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// `d` in whole milliseconds, at least 1.
fn millis(what: &str, d: Duration) -> Result<i64, String> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "{what} ({}) is not a whole number of milliseconds",
            show(d)
        ));
    }
    match i64::try_from(d.as_millis()) {
        Ok(0) => Err(format!("{what} must be at least 1ms")),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("{what} ({}) is too large", show(d))),
    }
}

/// `d` in milliseconds, saturating (a bound or a lateness, where 0 is fine).
fn millis_or_max(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WindowSpec {
    /// Checks for impossible combinations; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        self.shape().map(drop)?;
        millis("watermark idle_timeout", self.watermark.idle_timeout)?;
        Ok(())
    }

    pub(crate) fn shape(&self) -> Result<Shape, String> {
        match self.window {
            WindowKind::Tumbling(size) => {
                let size = millis("tumbling window size", size)?;
                Ok(Shape::Panes { size, slide: size })
            }
            WindowKind::Hopping { size, slide } => {
                let size_ms = millis("hopping window size", size)?;
                let slide_ms = millis("hopping window slide", slide)?;
                if slide_ms > size_ms {
                    return Err(format!(
                        "hopping window slide ({}) is larger than its size ({})",
                        show(slide),
                        show(size)
                    ));
                }
                if size_ms % slide_ms != 0 {
                    return Err(format!(
                        "hopping window slide ({}) does not divide its size ({}): \
                         hopping windows are made of slide-long panes",
                        show(slide),
                        show(size)
                    ));
                }
                if (size_ms / slide_ms) as u64 > MAX_PANES_PER_WINDOW {
                    return Err(format!(
                        "hopping window size ({}) is more than {MAX_PANES_PER_WINDOW} slides ({}): \
                         use a larger slide",
                        show(size),
                        show(slide)
                    ));
                }
                Ok(Shape::Panes {
                    size: size_ms,
                    slide: slide_ms,
                })
            }
            WindowKind::Session { gap } => Ok(Shape::Session {
                gap: millis("session window gap", gap)?,
            }),
        }
    }

    pub(crate) fn lateness_ms(&self) -> i64 {
        millis_or_max(self.allowed_lateness)
    }

    pub(crate) fn bound_ms(&self) -> i64 {
        millis_or_max(self.watermark.max_out_of_orderness)
    }

    pub(crate) fn idle_timeout_ms(&self) -> i64 {
        millis_or_max(self.watermark.idle_timeout)
    }

    pub fn max_ahead_ms(&self) -> i64 {
        millis_or_max(self.watermark.max_ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WindowSpec, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    fn check(yaml: &str) -> Result<(), String> {
        parse(yaml)?.validate()
    }

    const WM: &str = "watermark: { max_out_of_orderness: 10s, idle_timeout: 30s }\n";

    #[test]
    fn parses_the_three_kinds_with_defaults() {
        let s = parse(&format!("window: {{ tumbling: 1m }}\n{WM}")).unwrap();
        assert_eq!(s.window, WindowKind::Tumbling(Duration::from_secs(60)));
        assert_eq!(s.allowed_lateness, Duration::ZERO);
        assert_eq!(s.output, OutputMode::Append);
        assert_eq!(s.watermark.max_out_of_orderness, Duration::from_secs(10));

        let s = parse(&format!(
            "window: {{ hopping: {{ size: 1m, slide: 10s }} }}\n{WM}allowed_lateness: 5s\noutput: update\n"
        ))
        .unwrap();
        assert_eq!(
            s.window,
            WindowKind::Hopping {
                size: Duration::from_secs(60),
                slide: Duration::from_secs(10)
            }
        );
        assert_eq!(s.allowed_lateness, Duration::from_secs(5));
        assert_eq!(s.output, OutputMode::Update);

        let s =
            parse("window: { session: { gap: 30s } }\nwatermark: { max_out_of_orderness: 1m }\n")
                .unwrap();
        assert_eq!(
            s.window,
            WindowKind::Session {
                gap: Duration::from_secs(30)
            }
        );
        assert_eq!(s.watermark.idle_timeout, Duration::from_secs(30));
        s.validate().unwrap();
    }

    #[test]
    fn parsing_is_strict() {
        let e = parse(&format!("window: {{ tumbling: 1m }}\n{WM}lateness: 1s\n")).unwrap_err();
        assert!(e.contains("unknown field `lateness`"), "{e}");
        let e = parse(&format!(
            "window: {{ hopping: {{ size: 1m, slide: 10s, step: 1s }} }}\n{WM}"
        ))
        .unwrap_err();
        assert!(e.contains("unknown field `step`"), "{e}");
        let e = parse("window: { tumbling: 1m }\n").unwrap_err();
        assert!(e.contains("missing field `watermark`"), "{e}");
        let e = parse(&format!("window: {{ sliding: 1m }}\n{WM}")).unwrap_err();
        assert!(e.contains("unknown field `sliding`"), "{e}");
        let e = parse(&format!(
            "window: {{ tumbling: 1m, session: {{ gap: 1s }} }}\n{WM}"
        ))
        .unwrap_err();
        assert!(
            e.contains("expected exactly one of `tumbling`, `hopping` or `session`"),
            "{e}"
        );
    }

    #[test]
    fn validate_explains_impossible_combinations() {
        let hop = |size: &str, slide: &str| {
            check(&format!(
                "window: {{ hopping: {{ size: {size}, slide: {slide} }} }}\n{WM}"
            ))
        };
        assert_eq!(
            hop("1m", "2m").unwrap_err(),
            "hopping window slide (2m) is larger than its size (1m)"
        );
        assert_eq!(
            hop("1m", "25s").unwrap_err(),
            "hopping window slide (25s) does not divide its size (1m): \
             hopping windows are made of slide-long panes"
        );
        assert_eq!(
            hop("1m", "0s").unwrap_err(),
            "hopping window slide must be at least 1ms"
        );
        assert_eq!(
            hop("1day", "1s").unwrap_err(),
            "hopping window size (1day) is more than 1000 slides (1s): use a larger slide"
        );
        hop("1m", "1m").unwrap();
        hop("1m", "20s").unwrap();
        assert_eq!(
            check(&format!("window: {{ tumbling: 0s }}\n{WM}")).unwrap_err(),
            "tumbling window size must be at least 1ms"
        );
        assert_eq!(
            check(&format!("window: {{ tumbling: 1500us }}\n{WM}")).unwrap_err(),
            "tumbling window size (1ms 500us) is not a whole number of milliseconds"
        );
        assert_eq!(
            check(&format!("window: {{ session: {{ gap: 0ms }} }}\n{WM}")).unwrap_err(),
            "session window gap must be at least 1ms"
        );
        assert_eq!(
            check(
                "window: { tumbling: 1m }\nwatermark: { max_out_of_orderness: 0s, idle_timeout: 0s }\n"
            )
            .unwrap_err(),
            "watermark idle_timeout must be at least 1ms"
        );
    }
}
