//! Which librdkafka properties a spec may set (`kafka.consumer`,
//! `kafka.producer`), in every mode: `sluice validate`, `sluice run`,
//! `sluice dev` and specs sent to `sluice serve`.
//!
//! An allow-list: the performance, connection and by-value authentication
//! settings. Everything else is refused, so that a new librdkafka release
//! adds nothing a spec can reach. Three kinds of refusal, each naming the
//! property:
//! - [`DENIED`]: properties that load native code, run a command or read a
//!   file on the machine Sluice runs on (a spec sent over the API must not
//!   reach the server's filesystem; certificates and keys go by value, in
//!   the `*.pem` properties);
//! - [`SET_BY_SLUICE`] and the value rules in [`check_value`]: properties
//!   the delivery guarantee rests on (an idempotent producer acknowledged by
//!   all in-sync replicas; offsets stored and committed only once a batch's
//!   outputs are acknowledged, or kept in the checkpoint);
//! - anything not on [`ALLOWED`] or [`ALLOWED_PREFIXES`]: unknown.

use indexmap::IndexMap;

use super::{Scalar, SpecError};

/// Allowed as they are (values are librdkafka's to check).
const ALLOWED: &[&str] = &[
    // Identity, logging, statistics.
    "client.id",
    "client.rack",
    "debug",
    "log_level",
    "log.connection.close",
    "statistics.interval.ms",
    // Connection and metadata.
    "broker.address.family",
    "broker.address.ttl",
    "broker.version.fallback",
    "connections.max.idle.ms",
    "metadata.max.age.ms",
    "message.max.bytes",
    "message.copy.max.bytes",
    "receive.message.max.bytes",
    "request.timeout.ms",
    "retries",
    "message.send.max.retries",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    // Authentication by value.
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.sigalgs.list",
    "enable.ssl.certificate.verification",
    // Consumer.
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "coordinator.query.interval.ms",
    "partition.assignment.strategy",
    "group.instance.id",
    "allow.auto.create.topics",
    "check.crcs",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    // Producer.
    "linger.ms",
    "batch.size",
    "batch.num.messages",
    "compression.type",
    "compression.codec",
    "compression.level",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "sticky.partitioning.linger.ms",
    "partitioner",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
];

/// Allowed families: every property starting with one of these.
const ALLOWED_PREFIXES: &[&str] = &[
    "socket.",
    "reconnect.backoff.",
    "topic.metadata.",
    "api.version.",
    "fetch.",
    "queued.",
    "queue.buffering.max.",
];

/// Never allowed, with the reason.
const DENIED: &[(&str, &str)] = &[
    ("plugin.library.paths", "it loads native code"),
    ("ssl.engine.id", "it loads an OpenSSL engine (native code)"),
    ("ssl.engine.location", "it loads native code"),
    ("ssl_engine_location", "it loads native code"),
    ("ssl.providers", "it loads OpenSSL providers (native code)"),
    ("sasl.kerberos.kinit.cmd", "it runs a command"),
    (
        "sasl.kerberos.keytab",
        "it reads a file on the machine Sluice runs on",
    ),
    (
        "ssl.ca.location",
        "it reads a file on the machine Sluice runs on; give the certificate by value in `ssl.ca.pem`",
    ),
    (
        "ssl.certificate.location",
        "it reads a file on the machine Sluice runs on; give the certificate by value in `ssl.certificate.pem`",
    ),
    (
        "ssl.key.location",
        "it reads a file on the machine Sluice runs on; give the key by value in `ssl.key.pem`",
    ),
    (
        "ssl.keystore.location",
        "it reads a file on the machine Sluice runs on; give the certificate and key by value in `ssl.certificate.pem` and `ssl.key.pem`",
    ),
    (
        "ssl.crl.location",
        "it reads a file on the machine Sluice runs on",
    ),
    (
        "ssl.ca.certificate.stores",
        "it reads the machine's certificate stores; give the certificate by value in `ssl.ca.pem`",
    ),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "it makes Sluice send requests to a URL of the spec's choosing",
    ),
];

/// Set by Sluice from other parts of the spec, or fixed because a
/// guarantee rests on them.
const SET_BY_SLUICE: &[(&str, &str)] = &[
    ("bootstrap.servers", "set it in `kafka.brokers`"),
    ("metadata.broker.list", "set it in `kafka.brokers`"),
    ("group.id", "set it in `source.group`"),
    ("auto.offset.reset", "set it in `source.start`"),
    (
        "enable.partition.eof",
        "Sluice sets it (it marks the end of a drain)",
    ),
    (
        "transactional.id",
        "Sluice's exactly-once does not use Kafka transactions (see `delivery`)",
    ),
];

const BREAKS: &str = "it would break the pipeline's delivery guarantee";

/// Checks the properties of one map; `section` is `consumer` or
/// `producer`.
pub(super) fn check(section: &str, properties: &IndexMap<String, Scalar>) -> Result<(), SpecError> {
    for (name, value) in properties {
        let field = format!("kafka.{section}.{name}");
        if let Some((_, reason)) = DENIED.iter().find(|(denied, _)| denied == name) {
            return Err(SpecError::new(field, format!("not allowed: {reason}")));
        }
        if let Some((_, how)) = SET_BY_SLUICE.iter().find(|(set, _)| set == name) {
            return Err(SpecError::new(field, format!("not allowed: {how}")));
        }
        let allowed = ALLOWED.contains(&name.as_str())
            || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p));
        if !allowed {
            return Err(SpecError::new(
                field,
                "not an allowed librdkafka property (see README)",
            ));
        }
        check_value(name, value).map_err(|message| SpecError::new(field, message))?;
    }
    Ok(())
}

/// The value rules of allowed properties that a guarantee rests on.
fn check_value(name: &str, value: &Scalar) -> Result<(), String> {
    let text = value.to_string().to_ascii_lowercase();
    match name {
        "enable.idempotence" if text != "true" => Err(format!(
            "must be true: {BREAKS} (the sinks rely on an idempotent producer; a retried send would \
             duplicate or reorder records)"
        )),
        "acks" | "request.required.acks" if text != "all" && text != "-1" => Err(format!(
            "must be `all` (or -1): {BREAKS} (a record acknowledged before every in-sync replica \
             has it can be lost)"
        )),
        "max.in.flight.requests.per.connection" | "max.in.flight"
            if !text.parse::<u32>().is_ok_and(|n| (1..=5).contains(&n)) =>
        {
            Err(format!(
                "must be between 1 and 5: {BREAKS} (an idempotent producer keeps records in order \
                 only with at most 5 requests in flight)"
            ))
        }
        "enable.auto.commit" | "enable.auto.offset.store" if text != "false" => Err(format!(
            "must be false: {BREAKS} (Sluice stores and commits an offset only once the batch's \
             outputs are acknowledged; an automatic one would skip records after a crash)"
        )),
        "isolation.level" if text != "read_committed" => Err(format!(
            "must be `read_committed`: {BREAKS} (the pipeline would read records of aborted \
             transactions)"
        )),
        _ => Ok(()),
    }
}

/// The consumer and producer properties of a spec.
pub(super) fn check_all(kafka: &super::KafkaSpec) -> Result<(), SpecError> {
    check("consumer", &kafka.consumer)?;
    check("producer", &kafka.producer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(section: &str, name: &str, value: Scalar) -> String {
        let props = IndexMap::from([(name.to_owned(), value)]);
        check(section, &props).unwrap_err().to_string()
    }

    fn s(text: &str) -> Scalar {
        Scalar::String(text.to_owned())
    }

    #[test]
    fn common_settings_are_allowed() {
        let props: IndexMap<String, Scalar> = [
            ("linger.ms", Scalar::Int(20)),
            ("batch.size", Scalar::Int(100_000)),
            ("compression.type", s("zstd")),
            ("queue.buffering.max.messages", Scalar::Int(10)),
            ("fetch.min.bytes", Scalar::Int(1)),
            ("queued.min.messages", Scalar::Int(1000)),
            ("socket.keepalive.enable", Scalar::Bool(true)),
            ("security.protocol", s("sasl_ssl")),
            ("sasl.mechanisms", s("PLAIN")),
            ("sasl.username", s("u")),
            ("sasl.password", s("p")),
            ("ssl.ca.pem", s("-----BEGIN CERTIFICATE-----")),
            ("client.rack", s("r1")),
            ("debug", s("broker")),
            ("enable.idempotence", Scalar::Bool(true)),
            ("acks", s("all")),
            ("request.required.acks", Scalar::Int(-1)),
            ("max.in.flight.requests.per.connection", Scalar::Int(5)),
            ("enable.auto.commit", Scalar::Bool(false)),
            ("isolation.level", s("read_committed")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        check("consumer", &props).unwrap();
        check("producer", &props).unwrap();
    }

    #[test]
    fn properties_that_reach_the_machine_are_denied() {
        assert_eq!(
            err("consumer", "plugin.library.paths", s("/tmp/x.so")),
            "kafka.consumer.plugin.library.paths: not allowed: it loads native code"
        );
        assert_eq!(
            err("producer", "sasl.kerberos.kinit.cmd", s("touch /tmp/x")),
            "kafka.producer.sasl.kerberos.kinit.cmd: not allowed: it runs a command"
        );
        assert_eq!(
            err("producer", "ssl.ca.location", s("/etc/ssl/ca.pem")),
            "kafka.producer.ssl.ca.location: not allowed: it reads a file on the machine Sluice runs \
             on; give the certificate by value in `ssl.ca.pem`"
        );
        for (name, _) in DENIED {
            let e = err("consumer", name, s("x"));
            assert!(
                e.starts_with(&format!("kafka.consumer.{name}: not allowed: it ")),
                "{e}"
            );
        }
        for name in [
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.keystore.location",
            "ssl.crl.location",
            "sasl.kerberos.keytab",
            "ssl.engine.id",
            "ssl.engine.location",
            "ssl_engine_location",
        ] {
            assert!(DENIED.iter().any(|(d, _)| *d == name), "{name}");
        }
    }

    #[test]
    fn unknown_properties_are_refused() {
        assert_eq!(
            err("producer", "foo", s("1")),
            "kafka.producer.foo: not an allowed librdkafka property (see README)"
        );
        assert_eq!(
            err("consumer", "interceptor.x", s("1")),
            "kafka.consumer.interceptor.x: not an allowed librdkafka property (see README)"
        );
    }

    #[test]
    fn properties_sluice_sets_are_refused() {
        let cases = [
            (
                "group.id",
                "kafka.consumer.group.id: not allowed: set it in `source.group`",
            ),
            (
                "bootstrap.servers",
                "kafka.consumer.bootstrap.servers: not allowed: set it in `kafka.brokers`",
            ),
            (
                "auto.offset.reset",
                "kafka.consumer.auto.offset.reset: not allowed: set it in `source.start`",
            ),
            (
                "enable.partition.eof",
                "kafka.consumer.enable.partition.eof: not allowed: Sluice sets it (it marks the end \
                 of a drain)",
            ),
            (
                "transactional.id",
                "kafka.consumer.transactional.id: not allowed: Sluice's exactly-once does not use \
                 Kafka transactions (see `delivery`)",
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(err("consumer", name, s("x")), expected);
        }
    }

    #[test]
    fn values_that_break_the_guarantee_are_refused() {
        assert_eq!(
            err("producer", "enable.idempotence", Scalar::Bool(false)),
            "kafka.producer.enable.idempotence: must be true: it would break the pipeline's \
             delivery guarantee (the sinks rely on an idempotent producer; a retried send would \
             duplicate or reorder records)"
        );
        let acks = "must be `all` (or -1): it would break the pipeline's delivery guarantee (a \
                    record acknowledged before every in-sync replica has it can be lost)";
        assert_eq!(
            err("producer", "acks", Scalar::Int(0)),
            format!("kafka.producer.acks: {acks}")
        );
        assert_eq!(
            err("producer", "acks", s("1")),
            format!("kafka.producer.acks: {acks}")
        );
        assert_eq!(
            err("producer", "request.required.acks", Scalar::Int(1)),
            format!("kafka.producer.request.required.acks: {acks}")
        );
        assert_eq!(
            err(
                "producer",
                "max.in.flight.requests.per.connection",
                Scalar::Int(6)
            ),
            "kafka.producer.max.in.flight.requests.per.connection: must be between 1 and 5: it \
             would break the pipeline's delivery guarantee (an idempotent producer keeps records \
             in order only with at most 5 requests in flight)"
        );
        let commit = "must be false: it would break the pipeline's delivery guarantee (Sluice \
                      stores and commits an offset only once the batch's outputs are \
                      acknowledged; an automatic one would skip records after a crash)";
        assert_eq!(
            err("consumer", "enable.auto.commit", Scalar::Bool(true)),
            format!("kafka.consumer.enable.auto.commit: {commit}")
        );
        assert_eq!(
            err("consumer", "enable.auto.offset.store", s("true")),
            format!("kafka.consumer.enable.auto.offset.store: {commit}")
        );
        assert_eq!(
            err("consumer", "isolation.level", s("read_uncommitted")),
            "kafka.consumer.isolation.level: must be `read_committed`: it would break the \
             pipeline's delivery guarantee (the pipeline would read records of aborted \
             transactions)"
        );
    }
}
