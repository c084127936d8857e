//! The source's records, taken from librdkafka many at a time.
//!
//! rdkafka's `BaseConsumer::poll` hands out one message per call through
//! librdkafka's event API: a queue lock, a clock read and an allocation (the
//! event's `Arc`) per record, which made fetching most of a simple
//! pipeline's CPU time. Here every source partition's fetch queue is split
//! off the consumer queue (`rd_kafka_queue_get_partition`) and forwarded to
//! one queue of the source's own, which is read with
//! `rd_kafka_consume_batch_queue`: up to a batch's room of records in one
//! call. The consumer queue keeps the rest (rebalances, commit results,
//! statistics, errors) and is still polled between reads; an event arriving
//! there wakes a read that is waiting (`rd_kafka_queue_yield`), so a
//! rebalance is not held up by a batch being filled.
//!
//! librdkafka keeps an application's forwarding across assignments
//! (`RD_KAFKA_Q_F_FWD_APP`, librdkafka >= 2.1), and applies the same
//! bookkeeping to a batch read as to a poll: each record moves its
//! partition's application position (where a paused partition resumes), and
//! records from before a seek, pause or revocation are discarded (version
//! barriers). Partitions that appear after the source started are not
//! split: their records come through the consumer queue, as before, and
//! each partition is read through one queue only, so its order holds.

use std::ffi::{CStr, CString, c_void};
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::Timestamp;
use rdkafka::bindings::{
    rd_kafka_consume_batch_queue, rd_kafka_message_destroy, rd_kafka_message_headers,
    rd_kafka_message_t, rd_kafka_message_timestamp, rd_kafka_queue_cb_event_enable,
    rd_kafka_queue_destroy, rd_kafka_queue_forward, rd_kafka_queue_get_consumer,
    rd_kafka_queue_get_partition, rd_kafka_queue_length, rd_kafka_queue_new, rd_kafka_queue_t,
    rd_kafka_queue_yield, rd_kafka_resp_err_t, rd_kafka_t, rd_kafka_timestamp_type_t,
    rd_kafka_topic_name, rd_kafka_topic_t,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, Message, OwnedMessage};

/// A queue handle of librdkafka's, destroyed when dropped.
struct Queue(NonNull<rd_kafka_queue_t>);

// SAFETY: librdkafka's queue handles may be used from any thread (every
// queue operation takes the queue's lock).
#[allow(unsafe_code)]
unsafe impl Send for Queue {}
#[allow(unsafe_code)]
unsafe impl Sync for Queue {}

impl Queue {
    fn ptr(&self) -> *mut rd_kafka_queue_t {
        self.0.as_ptr()
    }
}

impl Drop for Queue {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the handle came from librdkafka and is destroyed once.
        unsafe { rd_kafka_queue_destroy(self.ptr()) }
    }
}

/// The queue the source partitions' records are forwarded to, and what it
/// takes to read it. Must be dropped before the consumer it belongs to
/// (declared before it in [`super::KafkaSource`]).
pub(super) struct Queues {
    /// A handle on the consumer queue, whose events wake a waiting read.
    /// (Before `records`: the wake-up is turned off before that goes.)
    events: Queue,
    records: Queue,
    /// The split partitions' queue handles.
    _partitions: Vec<Queue>,
    /// Per librdkafka topic handle seen, the index of its source topic.
    sources: Vec<(*mut rd_kafka_topic_t, u16)>,
    topics: Vec<String>,
    taken: Vec<*mut rd_kafka_message_t>,
}

// SAFETY: the topic handles in `sources` are only compared, never
// dereferenced; the message pointers in `taken` are only held during
// [`Queues::read`] (`&mut self`), on the calling thread; through `&self`
// only the thread-safe queue length is read.
#[allow(unsafe_code)]
unsafe impl Send for Queues {}
#[allow(unsafe_code)]
unsafe impl Sync for Queues {}

/// librdkafka calls this (on one of its threads, holding the consumer
/// queue's lock) when an event is queued for the application: a read
/// waiting on the records queue returns to have it served.
#[allow(unsafe_code)]
unsafe extern "C" fn wake(_rk: *mut rd_kafka_t, records: *mut c_void) {
    // SAFETY: `records` is the records queue handle, alive for as long as
    // this callback is enabled (see `Drop for Queues`).
    unsafe { rd_kafka_queue_yield(records.cast()) }
}

impl Queues {
    /// Splits the fetch queues of `partitions` (index into `topics`,
    /// partition) off `consumer`'s queue into the source's own. A
    /// partition librdkafka does not know stays on the consumer queue.
    #[allow(unsafe_code)]
    pub(super) fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topics: &[String],
        partitions: &[(u16, i32)],
    ) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is the consumer's live handle; both calls return a
        // new queue handle or null.
        let (records, events) =
            unsafe { (rd_kafka_queue_new(rk), rd_kafka_queue_get_consumer(rk)) };
        let records = NonNull::new(records).map(Queue);
        let events = NonNull::new(events).map(Queue);
        let (Some(records), Some(events)) = (records, events) else {
            tracing::warn!("no queue of its own for the source: records are read one at a time");
            return None;
        };
        let mut split = Vec::with_capacity(partitions.len());
        for &(source, partition) in partitions {
            let Ok(topic) = CString::new(topics[source as usize].as_str()) else {
                continue;
            };
            // SAFETY: as above; `topic` is NUL-terminated and outlives the
            // call. Forwarding takes its own reference on `records`.
            let queue = unsafe { rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition) };
            let Some(queue) = NonNull::new(queue).map(Queue) else {
                tracing::debug!(topic = %topics[source as usize], partition, "partition not split off");
                continue;
            };
            unsafe { rd_kafka_queue_forward(queue.ptr(), records.ptr()) };
            split.push(queue);
        }
        // SAFETY: `records` outlives the callback: `Drop` turns it off
        // first, under the consumer queue's lock, which librdkafka holds
        // while calling it.
        unsafe {
            rd_kafka_queue_cb_event_enable(events.ptr(), Some(wake), records.ptr().cast());
        }
        Some(Self {
            events,
            records,
            _partitions: split,
            sources: Vec::new(),
            topics: topics.to_vec(),
            taken: Vec::new(),
        })
    }

    /// Whether events wait in the consumer queue.
    #[allow(unsafe_code)]
    pub(super) fn events_waiting(&self) -> bool {
        // SAFETY: a live queue handle.
        unsafe { rd_kafka_queue_length(self.events.ptr()) > 0 }
    }

    /// Takes up to `max` records, waiting up to `timeout` until there are
    /// that many (less if an event arrives for the consumer queue), and
    /// hands each, in order, to `each` with its source index. Per-partition
    /// errors (end of partition) come as `Err`. Returns how many records
    /// (not errors) were handed out.
    #[allow(unsafe_code)]
    pub(super) fn read(
        &mut self,
        timeout: Duration,
        max: usize,
        mut each: impl FnMut(u16, Result<&Fetched<'_>, KafkaError>),
    ) -> usize {
        if max == 0 {
            return 0;
        }
        let timeout_ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        self.taken.clear();
        self.taken.reserve(max);
        // SAFETY: `taken` has room for `max` pointers; librdkafka writes
        // at most that many and says how many.
        unsafe {
            let n = rd_kafka_consume_batch_queue(
                self.records.ptr(),
                timeout_ms,
                self.taken.as_mut_ptr(),
                max,
            );
            self.taken.set_len(usize::try_from(n).unwrap_or(0).min(max));
        }
        // Destroys every message taken, even if `each` panics.
        struct Taken<'a>(&'a mut Vec<*mut rd_kafka_message_t>);
        impl Drop for Taken<'_> {
            fn drop(&mut self) {
                for m in self.0.drain(..) {
                    // SAFETY: each came from the batch read, destroyed once.
                    unsafe { rd_kafka_message_destroy(m) }
                }
            }
        }
        let taken = Taken(&mut self.taken);
        let mut records = 0;
        for &m in taken.0.iter() {
            // SAFETY: librdkafka returned `m` non-null and valid until it is
            // destroyed, after this loop.
            let fetched = Fetched {
                message: unsafe { &*m },
            };
            let source = source_of(&mut self.sources, &self.topics, fetched.message.rkt);
            match fetched.message.err {
                rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
                    records += 1;
                    each(source, Ok(&fetched))
                }
                rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                    each(source, Err(KafkaError::PartitionEOF(fetched.partition())))
                }
                e => each(source, Err(KafkaError::MessageConsumption(e.into()))),
            }
        }
        records
    }
}

/// The source index of a topic handle (the handles of a topic's messages
/// are one object, so a short list of those seen serves every record).
fn source_of(
    sources: &mut Vec<(*mut rd_kafka_topic_t, u16)>,
    topics: &[String],
    rkt: *mut rd_kafka_topic_t,
) -> u16 {
    if let Some(&(_, source)) = sources.iter().find(|(t, _)| *t == rkt) {
        return source;
    }
    let name = topic_name(rkt);
    let source = topics.iter().position(|t| t == name).unwrap_or(0) as u16;
    sources.push((rkt, source));
    source
}

#[allow(unsafe_code)]
fn topic_name<'a>(rkt: *mut rd_kafka_topic_t) -> &'a str {
    if rkt.is_null() {
        return "";
    }
    // SAFETY: a message's topic handle names its topic, NUL-terminated;
    // the name lives as long as the handle, which the message (and the
    // client) keeps.
    unsafe { CStr::from_ptr(rd_kafka_topic_name(rkt)) }
        .to_str()
        .unwrap_or("")
}

impl Drop for Queues {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: turning the wake-up off takes the consumer queue's lock,
        // so no call of `wake` is running once it returns; `records` is
        // destroyed after (field order).
        unsafe { rd_kafka_queue_cb_event_enable(self.events.ptr(), None, ptr::null_mut()) }
    }
}

/// A record taken by [`Queues::read`], valid during the call of `each`.
pub(super) struct Fetched<'a> {
    message: &'a rd_kafka_message_t,
}

impl Fetched<'_> {
    /// A copy that outlives the read (for a record that does not fit the
    /// batch being filled).
    pub(super) fn detach(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic().to_owned(),
            self.timestamp(),
            self.partition(),
            self.offset(),
            self.headers().map(BorrowedHeaders::detach),
        )
    }
}

#[allow(unsafe_code)]
fn slice<'a>(data: *mut c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka's key and payload pointers are null or point to
    // `len` bytes owned by the message.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

impl Message for Fetched<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        slice(self.message.key, self.message.key_len)
    }

    fn payload(&self) -> Option<&[u8]> {
        slice(self.message.payload, self.message.len)
    }

    #[allow(unsafe_code)]
    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        None
    }

    fn topic(&self) -> &str {
        topic_name(self.message.rkt)
    }

    fn partition(&self) -> i32 {
        self.message.partition
    }

    fn offset(&self) -> i64 {
        self.message.offset
    }

    #[allow(unsafe_code)]
    fn timestamp(&self) -> Timestamp {
        let mut kind = rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid (see `Fetched`).
        let t = unsafe { rd_kafka_message_timestamp(self.message, &mut kind) };
        match kind {
            _ if t == -1 => Timestamp::NotAvailable,
            rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(t),
            rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(t)
            }
            _ => Timestamp::NotAvailable,
        }
    }

    #[allow(unsafe_code)]
    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut headers = ptr::null_mut();
        // SAFETY: the message is valid; librdkafka parses its headers into
        // the message once and returns them, owned by the message. rdkafka's
        // `BorrowedHeaders` is a zero-sized stand-in whose address is the
        // `rd_kafka_headers_t *` (as in `kafka_headers::get`).
        unsafe {
            let err = rd_kafka_message_headers(self.message, &mut headers);
            (err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
                .then(|| &*headers.cast::<BorrowedHeaders>())
        }
    }
}
