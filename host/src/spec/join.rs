//! The `join` section of a step: a stream-stream interval join of two
//! inputs. The step is the chain's first: it reads both sides (their topics
//! become the pipeline's source topics, left ones first), and the steps
//! after it see the joined records.
//!
//! ```yaml
//! transforms:
//!   - module: json_join.wasm
//!     config: { left_key: order_id, right_key: order_id }
//!     join:
//!       left:  { topics: [orders],   watermark: { max_out_of_orderness: 10s } }
//!       right: { topics: [payments], watermark: { max_out_of_orderness: 10s }, start: latest }
//!       within: { before: 5m, after: 5m }
//!       type: left-outer
//! ```

use std::time::Duration;

use serde::Deserialize;

/// A stream-stream join step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub left: JoinSideSpec,
    pub right: JoinSideSpec,
    /// A right record matches a left one when its event time lies in
    /// `[left - before, left + after]`.
    pub within: WithinSpec,
    /// `inner` (default), `left-outer`, `right-outer` or `full-outer`.
    #[serde(rename = "type", default)]
    pub kind: JoinKind,
}

/// One input of a join.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSideSpec {
    pub topics: Vec<String>,
    pub watermark: JoinWatermarkSpec,
    /// Where the side starts when the group has no committed offset for a
    /// partition; default: `source.start`.
    #[serde(default)]
    pub start: Option<super::StartFrom>,
}

/// A side's watermark: it trails the largest event time seen on the side
/// by this much; a record of the side older than its watermark is late.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinWatermarkSpec {
    #[serde(with = "humantime_serde")]
    pub max_out_of_orderness: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithinSpec {
    #[serde(with = "humantime_serde")]
    pub before: Duration,
    #[serde(with = "humantime_serde")]
    pub after: Duration,
}

/// Which records are kept without a match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinKind {
    #[default]
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
}

/// At most a week each way: state is bounded by the interval.
const MAX_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_DISORDER: Duration = Duration::from_secs(24 * 3600);

impl JoinSpec {
    /// The source topics of a pipeline that starts with this join: the
    /// left topics, then the right ones.
    pub fn topics(&self) -> Vec<String> {
        self.left
            .topics
            .iter()
            .chain(&self.right.topics)
            .cloned()
            .collect()
    }

    /// Checks the section on its own; `Err((field under the section,
    /// message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, side) in [("left", &self.left), ("right", &self.right)] {
            if side.topics.is_empty() {
                return Err((
                    format!("{name}.topics"),
                    "must name at least one topic".into(),
                ));
            }
            if side.watermark.max_out_of_orderness > MAX_DISORDER {
                return Err((
                    format!("{name}.watermark.max_out_of_orderness"),
                    "must be at most 24h".into(),
                ));
            }
        }
        if let Some(topic) = self
            .left
            .topics
            .iter()
            .find(|t| self.right.topics.contains(t))
        {
            return Err((
                "right.topics".into(),
                format!("`{topic}` is on both sides; a topic feeds one side only"),
            ));
        }
        for (name, d) in [
            ("within.before", self.within.before),
            ("within.after", self.within.after),
        ] {
            if d > MAX_WITHIN {
                return Err((name.into(), "must be at most 7 days".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> JoinSpec {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn a_join_section_reads_with_its_defaults() {
        let j = spec(
            "left: { topics: [a, b], watermark: { max_out_of_orderness: 10s } }\n\
             right: { topics: [c], watermark: { max_out_of_orderness: 1m } }\n\
             within: { before: 5m, after: 30s }\n",
        );
        assert_eq!(j.kind, JoinKind::Inner);
        assert_eq!(j.topics(), ["a", "b", "c"]);
        assert_eq!(j.within.before, Duration::from_secs(300));
        assert_eq!(j.within.after, Duration::from_secs(30));
        assert_eq!(
            j.right.watermark.max_out_of_orderness,
            Duration::from_secs(60)
        );
        assert_eq!(j.validate(), Ok(()));
        assert_eq!((j.left.start, j.right.start), (None, None));
        let full = spec(
            "left: { topics: [a], watermark: { max_out_of_orderness: 0s } }\n\
             right: { topics: [c], watermark: { max_out_of_orderness: 0s }, start: latest }\n\
             within: { before: 0s, after: 0s }\ntype: full-outer\n",
        );
        assert_eq!(full.kind, JoinKind::FullOuter);
        assert_eq!(full.right.start, Some(super::super::StartFrom::Latest));
    }

    #[test]
    fn a_topic_on_both_sides_and_unbounded_intervals_are_refused() {
        let both = spec(
            "left: { topics: [a], watermark: { max_out_of_orderness: 1s } }\n\
             right: { topics: [b, a], watermark: { max_out_of_orderness: 1s } }\n\
             within: { before: 1m, after: 1m }\n",
        );
        assert_eq!(
            both.validate(),
            Err((
                "right.topics".into(),
                "`a` is on both sides; a topic feeds one side only".into()
            ))
        );
        let wide = spec(
            "left: { topics: [a], watermark: { max_out_of_orderness: 1s } }\n\
             right: { topics: [b], watermark: { max_out_of_orderness: 1s } }\n\
             within: { before: 8d, after: 1m }\n",
        );
        assert_eq!(
            wide.validate(),
            Err(("within.before".into(), "must be at most 7 days".into()))
        );
        let empty = spec(
            "left: { topics: [], watermark: { max_out_of_orderness: 1s } }\n\
             right: { topics: [b], watermark: { max_out_of_orderness: 1s } }\n\
             within: { before: 1m, after: 1m }\n",
        );
        assert_eq!(
            empty.validate(),
            Err(("left.topics".into(), "must name at least one topic".into()))
        );
        assert!(
            serde_yaml_ng::from_str::<JoinSpec>(
                "left: { topics: [a], watermark: { max_out_of_orderness: 1s } }\n\
                 right: { topics: [b], watermark: { max_out_of_orderness: 1s } }\n\
                 within: { before: 1m, after: 1m }\ntype: cross\n"
            )
            .is_err()
        );
    }
}
