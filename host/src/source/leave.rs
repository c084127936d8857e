//! Leaving a consumer group as a static member.
//!
//! librdkafka sends no LeaveGroup for a member with a `group.instance.id`
//! when it closes: a static member is expected back (a restarted pod) and
//! keeps its partitions for the session timeout. That is right for a
//! process that stops to restart, and wrong for one that is done: a
//! `--until-caught-up` process that exits first would leave the others
//! waiting a whole session timeout (45 s by default) for the next
//! rebalance. Such a process removes its instance from the group the way
//! Kafka's admin client does (KIP-345: LeaveGroup v3+ naming the
//! `group.instance.id`), after its consumer closed.
//!
//! The request goes over a plain TCP connection of its own; with another
//! `security.protocol` nothing is sent and the group falls back on the
//! session timeout, as before.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, LeaveGroupRequest, LeaveGroupResponse, RequestHeader,
    ResponseHeader, leave_group_request::MemberIdentity,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// How long each connection and each answer may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Kafka's own bound on a response; anything larger is not an answer to
/// these requests.
const MAX_RESPONSE: usize = 1 << 20;
const CLIENT_ID: &str = "sluice";
const REASON: &str = "sluice: caught up, leaving for good";

/// Removes the static member `instance` from `group`. `brokers`: the
/// bootstrap list (`host:port,...`), tried in order.
pub fn leave_group(brokers: &str, group: &str, instance: &str) -> anyhow::Result<()> {
    let mut last = anyhow::anyhow!("no bootstrap broker given");
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match leave_through(broker, group, instance) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.context(format!("through {broker}")),
        }
    }
    Err(last)
}

fn leave_through(broker: &str, group: &str, instance: &str) -> anyhow::Result<()> {
    let mut bootstrap = Connection::open(broker)?;
    let group_name = StrBytes::from_string(group.to_owned());
    let coordinator: FindCoordinatorResponse = bootstrap.call(0, |version| {
        // One key before version 4, a list of them from then on.
        let request = FindCoordinatorRequest::default();
        if version < 4 {
            request.with_key(group_name.clone())
        } else {
            request.with_coordinator_keys(vec![group_name.clone()])
        }
    })?;
    let (error, host, port) = match coordinator.coordinators.first() {
        Some(c) => (c.error_code, c.host.to_string(), c.port),
        None => (
            coordinator.error_code,
            coordinator.host.to_string(),
            coordinator.port,
        ),
    };
    anyhow::ensure!(error == 0, "finding the group's coordinator: error {error}");
    let mut coordinator = Connection::open(&format!("{host}:{port}"))?;
    // Version 3 is the first that names members by instance; 5 the first
    // with a reason.
    let left: LeaveGroupResponse = coordinator.call(3, |version| {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(group_name.clone()))
            .with_members(vec![
                MemberIdentity::default()
                    .with_group_instance_id(Some(StrBytes::from_string(instance.to_owned())))
                    .with_reason((version >= 5).then(|| StrBytes::from_static_str(REASON))),
            ])
    })?;
    let error = left
        .members
        .first()
        .map(|m| m.error_code)
        .filter(|_| left.error_code == 0)
        .unwrap_or(left.error_code);
    // UNKNOWN_MEMBER_ID (25): not (or no longer) in the group: nothing to do.
    anyhow::ensure!(
        error == 0 || error == 25,
        "leaving the group: error {error}"
    );
    Ok(())
}

/// One broker connection speaking the versions both sides know.
struct Connection {
    stream: TcpStream,
    correlation: i32,
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    fn open(address: &str) -> anyhow::Result<Self> {
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{address} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut connection = Self {
            stream,
            correlation: 0,
            versions: Vec::new(),
        };
        // Version 0 is answered by every broker.
        let versions: ApiVersionsResponse = connection.send(ApiVersionsRequest::default(), 0)?;
        anyhow::ensure!(
            versions.error_code == 0,
            "asking for API versions: error {}",
            versions.error_code
        );
        connection.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(connection)
    }

    /// Sends the request `build` makes for the newest version both this
    /// client and the broker support (at least `least`).
    fn call<Q: Request>(
        &mut self,
        least: i16,
        build: impl FnOnce(i16) -> Q,
    ) -> anyhow::Result<Q::Response> {
        let (min, max) = self
            .versions
            .iter()
            .find(|(key, ..)| *key == Q::KEY)
            .map(|&(_, min, max)| {
                (
                    min.max(Q::VERSIONS.min).max(least),
                    max.min(Q::VERSIONS.max),
                )
            })
            .ok_or_else(|| anyhow::anyhow!("the broker does not support API {}", Q::KEY))?;
        anyhow::ensure!(min <= max, "no version of API {} in common", Q::KEY);
        self.send(build(max), max)
    }

    fn send<Q: Request>(&mut self, request: Q, version: i16) -> anyhow::Result<Q::Response> {
        self.correlation += 1;
        let key = ApiKey::try_from(Q::KEY).map_err(|_| anyhow::anyhow!("unknown API key"))?;
        let header = RequestHeader::default()
            .with_request_api_key(Q::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = Vec::new();
        header.encode(&mut body, Q::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        anyhow::ensure!(
            (0..MAX_RESPONSE as i32).contains(&size),
            "a response of {size} bytes"
        );
        let mut answer = vec![0u8; size as usize];
        self.stream.read_exact(&mut answer)?;
        let mut answer = answer.as_slice();
        let header = ResponseHeader::decode(&mut answer, key.response_header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == self.correlation,
            "an answer to another request"
        );
        Q::Response::decode(&mut answer, version)
    }
}
