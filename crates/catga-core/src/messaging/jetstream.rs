//! [`Broker`] on NATS JetStream.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        message::{Acker as NatsAcker, PublishMessage},
        stream::{self, RetentionPolicy, StorageType},
    },
};
use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{
    Acker, Broker, ConsumerSpec, DUPLICATE_WINDOW, Delivery, MessagingError, OutgoingMessage,
    Publisher, Retention, STREAMS, Slots,
};
use crate::config::{NatsCredentials, NatsSettings, keys};

/// A JetStream connection. Cloning shares the connection.
#[derive(Clone)]
pub struct JetStreamBroker {
    client: async_nats::Client,
    context: jetstream::Context,
    stream_replicas: usize,
}

impl JetStreamBroker {
    /// Connects in the background: returns at once, reconnects forever, so a
    /// service starts (not ready) while NATS is away and recovers on its own.
    pub async fn connect(
        settings: &NatsSettings,
        client_name: &str,
    ) -> Result<Self, MessagingError> {
        let client = connect_options(settings)?
            .name(client_name)
            .custom_inbox_prefix(crate::contracts::subjects::inbox_prefix(client_name))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .event_callback(|event| async move {
                tracing::info!(target: "catga::nats", %event, "NATS connection event");
            })
            .connect(settings.servers.clone())
            .await
            .map_err(|err| MessagingError::nats("connect", err))?;
        let context = jetstream::new(client.clone());
        Ok(Self {
            client,
            context,
            stream_replicas: settings.stream_replicas,
        })
    }
}

/// Who the service is to the server (its credentials) and, for `tls://`,
/// whom it trusts (`NATS__TlsCaFile`, or the system's roots).
pub fn connect_options(
    settings: &NatsSettings,
) -> Result<async_nats::ConnectOptions, MessagingError> {
    // rustls cannot pick a provider itself when two are compiled in (ring
    // for async-nats, aws-lc-rs for reqwest); one already chosen stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = match &settings.credentials {
        NatsCredentials::None => async_nats::ConnectOptions::new(),
        NatsCredentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsCredentials::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsCredentials::NkeySeed { seed, .. } => {
            async_nats::ConnectOptions::with_nkey(seed.clone())
        }
        // Checked when the settings were read; the file's text is never shown.
        NatsCredentials::Creds { path, contents } => {
            async_nats::ConnectOptions::with_credentials(contents).map_err(|err| {
                MessagingError::refused(
                    format!("read {} {}", keys::NATS_CREDS_FILE, path.display()),
                    err.kind().to_string(),
                )
            })?
        }
    };
    Ok(match &settings.tls_ca_file {
        Some(ca) => options.add_root_certificates(ca.clone()),
        None => options,
    })
}

#[async_trait]
impl Publisher for JetStreamBroker {
    async fn send(&self, message: OutgoingMessage) -> Result<(), MessagingError> {
        let mut header_map = HeaderMap::new();
        for (name, value) in &message.headers {
            header_map.insert(name.as_str(), value.as_str());
        }
        let publish = PublishMessage::build()
            .payload(message.payload)
            .headers(header_map)
            .message_id(&message.msg_id);
        let operation = || format!("publish on {}", message.subject);
        let ack = self
            .context
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|err| MessagingError::nats(operation(), err))?;
        ack.await
            .map_err(|err| MessagingError::nats(operation(), err))?;
        Ok(())
    }
}

#[async_trait]
impl Broker for JetStreamBroker {
    async fn ensure_topology(&self) -> Result<(), MessagingError> {
        for spec in STREAMS {
            self.reconcile_stream(self.stream_config(&spec)).await?;
        }
        Ok(())
    }

    async fn verify_topology(&self) -> Result<(), MessagingError> {
        for spec in STREAMS {
            let config = self.stream_config(&spec);
            let object = || format!("stream {}", config.name);
            let Some(existing) = self.stream_on_server(&config.name).await? else {
                return Err(MessagingError::TopologyOutdated {
                    object: object(),
                    difference: "missing on the server".to_owned(),
                });
            };
            if let Some((setting, was, wanted)) = stream_differences(&existing, &config).first() {
                return Err(MessagingError::TopologyOutdated {
                    object: object(),
                    difference: format!(
                        "{setting} is {was} on the server but configured as {wanted}"
                    ),
                });
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: &ConsumerSpec,
        slots: Slots,
        stop: CancellationToken,
    ) -> Result<BoxStream<'static, Result<Delivery, MessagingError>>, MessagingError> {
        let stream = self.stream(spec.stream).await?;
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            filter_subject: spec.filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            // Enough room for every replica the autoscaler may run.
            max_ack_pending: 1_000,
            ..Default::default()
        };
        let consumer = self.reconcile_consumer(&stream, config).await?;
        let puller = Puller::bind(
            consumer,
            self.context.clone(),
            spec.durable.clone(),
            slots,
            stop,
        )
        .await?;
        Ok(puller.into_stream())
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn flush(&self) -> Result<(), MessagingError> {
        self.client
            .flush()
            .await
            .map_err(|err| MessagingError::unavailable("flush", err))
    }

    async fn dead_letter_exhausted(
        &self,
        spec: &ConsumerSpec,
        service: &'static str,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            spec.stream, spec.durable
        );
        // A queue group: one replica handles each advisory.
        let queue = format!("catga-dead-letter-{}", spec.durable);
        let Some(mut advisories) =
            crate::shutdown::retry_until_ok("watch for exhausted messages", &shutdown, || {
                self.client.queue_subscribe(subject.clone(), queue.clone())
            })
            .await
        else {
            return;
        };
        loop {
            // Shutdown is only heard between messages: a message being
            // forwarded is copied and deleted before this returns.
            let advisory = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                next = advisories.next() => match next {
                    Some(advisory) => advisory,
                    None => return,
                },
            };
            let Ok(exhausted) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
                tracing::warn!("unreadable max-deliveries advisory");
                continue;
            };
            self.forward_exhausted_retrying(spec, service, &exhausted)
                .await;
        }
    }

    async fn consumer_lag(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Option<(u64, u64)>, MessagingError> {
        let stream = self.stream(spec.stream).await?;
        let info = stream
            .consumer_info(&spec.durable)
            .await
            .map_err(|err| MessagingError::nats(format!("consumer {}", spec.durable), err))?;
        Ok(Some((
            info.num_pending,
            u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        )))
    }
}

/// Stream settings the server cannot change in place.
const FIXED_STREAM_SETTINGS: [&str; 2] = ["retention", "storage"];

/// Each setting of `existing` that differs from `configured`: its name, its
/// value on the server, its configured value. The fixed ones come first.
fn stream_differences(
    existing: &stream::Config,
    configured: &stream::Config,
) -> Vec<(&'static str, String, String)> {
    let differs =
        |setting: &'static str, was: &dyn std::fmt::Debug, wanted: &dyn std::fmt::Debug| {
            let (was, wanted) = (format!("{was:?}"), format!("{wanted:?}"));
            (was != wanted).then_some((setting, was, wanted))
        };
    let (e, c) = (existing, configured);
    [
        differs("retention", &e.retention, &c.retention),
        differs("storage", &e.storage, &c.storage),
        differs(keys::NATS_STREAM_REPLICAS, &e.num_replicas, &c.num_replicas),
        differs("subjects", &e.subjects, &c.subjects),
        differs("max_age", &e.max_age, &c.max_age),
        differs("duplicate_window", &e.duplicate_window, &c.duplicate_window),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long past its expiry a pull may stay unanswered (the server's `408`
/// lost with a connection) before the subscription is bound again.
const PULL_ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Fetches a durable consumer's messages, never more than the free slots can
/// take ([`Broker::subscribe`]), on one reply subscription for its life.
///
/// One pull is open at a time. It asks for the slot the caller waits with
/// plus every slot free at that moment; only this puller takes slots, so
/// each message of the pull finds one free when it arrives. Under a backlog
/// a pull fills a whole batch in one round trip; one at a time, each message
/// would cost a round trip and a subscription of its own.
struct Puller {
    consumer: jetstream::consumer::PullConsumer,
    context: jetstream::Context,
    durable: String,
    inbox: async_nats::Subject,
    replies: async_nats::Subscriber,
    slots: Slots,
    /// A slot taken for the next message while a pull is open.
    spare: Option<OwnedSemaphorePermit>,
    /// Messages the open pull asked for and has not yet brought.
    asked: usize,
    /// When the open pull must have been answered.
    answer_by: tokio::time::Instant,
    stop: CancellationToken,
}

impl Puller {
    async fn bind(
        consumer: jetstream::consumer::PullConsumer,
        context: jetstream::Context,
        durable: String,
        slots: Slots,
        stop: CancellationToken,
    ) -> Result<Self, MessagingError> {
        let client = context.client();
        let inbox = async_nats::Subject::from(client.new_inbox());
        let replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| MessagingError::nats(format!("subscribe for {durable}"), err))?;
        Ok(Self {
            consumer,
            context,
            durable,
            inbox,
            replies,
            slots,
            spare: None,
            asked: 0,
            answer_by: tokio::time::Instant::now(),
            stop,
        })
    }

    /// The next delivery; `None` once stopped with nothing more on its way.
    async fn next(&mut self) -> Option<Result<Delivery, MessagingError>> {
        loop {
            if self.asked == 0
                && let Err(err) = self.pull().await?
            {
                return Some(Err(err));
            }
            let reply = tokio::select! {
                reply = self.replies.next() => reply,
                () = tokio::time::sleep_until(self.answer_by) => {
                    self.asked = 0;
                    return Some(Err(MessagingError::unavailable(
                        format!("pull from {}", self.durable),
                        std::io::Error::other("the pull was not answered in time"),
                    )));
                }
            };
            let Some(reply) = reply else {
                return Some(Err(MessagingError::unavailable(
                    format!("pull from {}", self.durable),
                    std::io::Error::other("the reply subscription ended"),
                )));
            };
            match reply.status {
                None | Some(async_nats::StatusCode::OK) => {
                    self.asked = self.asked.saturating_sub(1);
                    let slot = match self.spare.take() {
                        Some(slot) => slot,
                        // Free by construction; waiting covers a miscount.
                        None => self.slots.take().await,
                    };
                    return Some(
                        delivery_from(jetstream::Message {
                            message: reply,
                            context: self.context.clone(),
                        })
                        .map(|mut delivery| {
                            delivery.slot = Some(slot);
                            delivery
                        }),
                    );
                }
                Some(async_nats::StatusCode::IDLE_HEARTBEAT) => {}
                // The pull expired or found nothing: ask again.
                Some(async_nats::StatusCode::TIMEOUT | async_nats::StatusCode::NOT_FOUND) => {
                    self.asked = 0;
                }
                // The consumer deleted, a leader change, a limit: bind again.
                Some(status) => {
                    self.asked = 0;
                    return Some(Err(MessagingError::unavailable(
                        format!("pull from {}", self.durable),
                        std::io::Error::other(format!(
                            "the server answered {status}: {}",
                            reply.description.as_deref().unwrap_or("")
                        )),
                    )));
                }
            }
        }
    }

    /// Waits for a free slot, then opens a pull for it and every other free
    /// slot. `None` once stopped.
    async fn pull(&mut self) -> Option<Result<(), MessagingError>> {
        if self.spare.is_none() {
            let slot = tokio::select! {
                () = self.stop.cancelled() => return None,
                slot = self.slots.take() => slot,
            };
            self.spare = Some(slot);
        }
        if self.stop.is_cancelled() {
            return None;
        }
        let batch = 1 + self.slots.free();
        let request = pull::BatchConfig {
            batch,
            expires: Some(PULL_EXPIRES),
            ..Default::default()
        };
        if let Err(err) = self
            .consumer
            .request_batch(request, self.inbox.clone())
            .await
        {
            // Only the publish can fail: the connection is away.
            return Some(Err(MessagingError::unavailable(
                format!("pull from {}", self.durable),
                err,
            )));
        }
        self.asked = batch;
        self.answer_by = tokio::time::Instant::now() + PULL_EXPIRES + PULL_ANSWER_GRACE;
        Some(Ok(()))
    }

    fn into_stream(self) -> BoxStream<'static, Result<Delivery, MessagingError>> {
        futures::stream::unfold(self, |mut puller| async move {
            let next = puller.next().await?;
            Some((next, puller))
        })
        .boxed()
    }
}

fn delivery_from(message: jetstream::Message) -> Result<Delivery, MessagingError> {
    let (id, delivered) = {
        let info = message
            .info()
            .map_err(|err| MessagingError::refused("read message metadata", err))?;
        (
            message_identity(info.stream, info.stream_sequence),
            info.delivered,
        )
    };
    let client = message.context.client();
    let reply = message.reply.clone();
    let (message, acker) = message.split();
    let headers = message
        .headers
        .as_ref()
        .map(header_pairs)
        .unwrap_or_default();
    Ok(Delivery {
        id,
        subject: message.subject.to_string(),
        headers,
        payload: message.payload,
        delivered,
        acker: Box::new(JetStreamAcker {
            acker,
            reply,
            client,
        }),
        slot: None,
    })
}

/// A message's identity across deliveries: `stream:sequence`. Both
/// dead-letter paths (the consumer's and the max-deliveries advisory) name
/// a message by it, so the dead-letter stream deduplicates their copies.
fn message_identity(stream: &str, sequence: u64) -> String {
    format!("{stream}:{sequence}")
}

fn header_pairs(headers: &async_nats::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// The part of `io.nats.jetstream.advisory.v1.max_deliver` we use.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: i64,
}

impl JetStreamBroker {
    /// The configuration of one of [`STREAMS`].
    fn stream_config(&self, spec: &super::StreamSpec) -> stream::Config {
        stream::Config {
            name: spec.name.to_owned(),
            subjects: vec![spec.subjects.to_owned()],
            retention: match spec.retention {
                Retention::WorkQueue => RetentionPolicy::WorkQueue,
                Retention::Limits => RetentionPolicy::Limits,
            },
            storage: StorageType::File,
            num_replicas: self.stream_replicas,
            max_age: spec.max_age,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }

    /// The configuration of stream `name` on the server; `None` when it does not exist.
    async fn stream_on_server(&self, name: &str) -> Result<Option<stream::Config>, MessagingError> {
        match self.context.get_stream(name).await {
            Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
            Err(err)
                if matches!(err.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref api)
                    if api.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(err) => Err(MessagingError::nats(format!("stream {name}"), err)),
        }
    }

    /// Creates the stream, or brings an existing one to `config` (replicas,
    /// subjects, age, duplicate window). Retention and storage cannot change
    /// in place: a difference there is a [`MessagingError::Mismatch`]. Many
    /// replicas may race here: both steps are idempotent on the server.
    async fn reconcile_stream(&self, config: stream::Config) -> Result<(), MessagingError> {
        let name = config.name.clone();
        let Some(existing) = self.stream_on_server(&name).await? else {
            self.context
                .get_or_create_stream(config)
                .await
                .map_err(|err| MessagingError::nats(format!("create stream {name}"), err))?;
            return Ok(());
        };
        let differences = stream_differences(&existing, &config);
        if let Some((setting, was, wanted)) = differences
            .iter()
            .find(|(setting, ..)| FIXED_STREAM_SETTINGS.contains(setting))
        {
            return Err(MessagingError::Mismatch {
                object: format!("stream {name}"),
                setting,
                existing: was.clone(),
                configured: wanted.clone(),
            });
        }
        if differences.is_empty() {
            return Ok(());
        }
        let changed: Vec<&str> = differences.iter().map(|(setting, ..)| *setting).collect();
        // Everything else the server keeps as it was (limits set by hand).
        let updated = stream::Config {
            num_replicas: config.num_replicas,
            subjects: config.subjects,
            max_age: config.max_age,
            duplicate_window: config.duplicate_window,
            ..existing
        };
        self.context.update_stream(updated).await.map_err(|err| {
            MessagingError::nats(
                format!("update {} of stream {name}", changed.join(", ")),
                err,
            )
        })?;
        tracing::info!(stream = %name, changed = ?changed, "stream brought to the configured settings");
        Ok(())
    }

    /// Creates the durable consumer, or brings an existing one to `config`
    /// (ack wait, max deliveries, max ack pending: the server changes them in
    /// place). Its filter, deliver and ack policies cannot change in place: a
    /// difference there is a [`MessagingError::Mismatch`].
    async fn reconcile_consumer(
        &self,
        stream: &jetstream::stream::Stream<()>,
        config: pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, MessagingError> {
        let durable = config.durable_name.clone().unwrap_or_default();
        let object = || format!("consumer {durable}");
        match stream.consumer_info(&durable).await {
            Ok(info) => {
                let existing = info.config;
                for (setting, differs, was, wanted) in [
                    (
                        "filter_subject",
                        existing.filter_subject != config.filter_subject,
                        existing.filter_subject.clone(),
                        config.filter_subject.clone(),
                    ),
                    (
                        "deliver_policy",
                        existing.deliver_policy != config.deliver_policy,
                        format!("{:?}", existing.deliver_policy),
                        format!("{:?}", config.deliver_policy),
                    ),
                    (
                        "ack_policy",
                        existing.ack_policy != config.ack_policy,
                        format!("{:?}", existing.ack_policy),
                        format!("{:?}", config.ack_policy),
                    ),
                ] {
                    if differs {
                        return Err(MessagingError::Mismatch {
                            object: object(),
                            setting,
                            existing: was,
                            configured: wanted,
                        });
                    }
                }
                if existing.ack_wait != config.ack_wait
                    || existing.max_deliver != config.max_deliver
                    || existing.max_ack_pending != config.max_ack_pending
                {
                    tracing::info!(
                        consumer = %durable,
                        ack_wait = ?config.ack_wait,
                        max_deliver = config.max_deliver,
                        "consumer brought to the configured settings"
                    );
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
                ) => {}
            Err(err) => return Err(MessagingError::nats(object(), err)),
        }
        // Create or update: the server applies the changeable settings in place.
        stream
            .create_consumer(config)
            .await
            .map_err(|err| MessagingError::nats(format!("bind {}", object()), err))
    }

    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, MessagingError> {
        self.context
            .get_stream_no_info(name)
            .await
            .map_err(|err| MessagingError::nats(format!("stream {name}"), err))
    }

    /// [`Self::forward_exhausted`], tried again while NATS is briefly away: a
    /// bounded number of times, whether or not shutdown has begun (both steps
    /// are idempotent: the copy is deduplicated on the message's identity).
    async fn forward_exhausted_retrying(
        &self,
        spec: &ConsumerSpec,
        service: &'static str,
        exhausted: &MaxDeliveries,
    ) {
        const ATTEMPTS: u32 = 5;
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            match self.forward_exhausted(spec, service, exhausted).await {
                Ok(()) => return,
                Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!(stream_seq = exhausted.stream_seq, error = %crate::error::Chain(&err), "cannot dead-letter an exhausted message yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(err) => {
                    tracing::error!(stream_seq = exhausted.stream_seq, error = %crate::error::Chain(&err), "cannot dead-letter an exhausted message; it stays in its stream");
                    return;
                }
            }
        }
    }

    /// Copies one exhausted message to the dead-letter stream; a work-queue
    /// stream then drops it (it would otherwise stay there, undelivered, forever).
    async fn forward_exhausted(
        &self,
        spec: &ConsumerSpec,
        service: &'static str,
        exhausted: &MaxDeliveries,
    ) -> Result<(), MessagingError> {
        let stream = self.stream(spec.stream).await?;
        let original = stream
            .get_raw_message(exhausted.stream_seq)
            .await
            .map_err(|err| {
                MessagingError::nats(
                    format!("read message {} of {}", exhausted.stream_seq, spec.stream),
                    err,
                )
            })?;
        let headers = header_pairs(&original.headers);
        let reason = super::exhausted_reason(exhausted.deliveries);
        let message = super::dead_letter_message(
            &original.subject,
            &message_identity(spec.stream, exhausted.stream_seq),
            &headers,
            original.payload,
            &reason,
            exhausted.deliveries,
            service,
        );
        self.publish(message).await?;
        metrics::counter!(crate::contracts::metrics::DEAD_LETTERS, "service" => service)
            .increment(1);
        tracing::error!(subject = %original.subject, stream_seq = exhausted.stream_seq, %reason, "dead-lettered");
        if STREAMS
            .iter()
            .any(|s| s.name == spec.stream && s.retention == Retention::WorkQueue)
        {
            stream
                .delete_message(exhausted.stream_seq)
                .await
                .map_err(|err| {
                    MessagingError::nats(
                        format!("delete message {} of {}", exhausted.stream_seq, spec.stream),
                        err,
                    )
                })?;
        }
        Ok(())
    }
}

struct JetStreamAcker {
    acker: NatsAcker,
    /// The message's `$JS.ACK…` subject and the connection, for the ack.
    reply: Option<async_nats::Subject>,
    client: async_nats::Client,
}

impl JetStreamAcker {
    async fn send(&self, kind: AckKind) -> Result<(), MessagingError> {
        self.acker
            .ack_with(kind)
            .await
            .map_err(|err| MessagingError::unavailable(format!("{kind:?}"), err))
    }
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), MessagingError> {
        // Double ack: wait for the server to confirm, so "acked" really means
        // the message will not come back. Asked as a request on the client's
        // shared reply subscription: async-nats' `double_ack` subscribes and
        // unsubscribes a fresh inbox for every message.
        let Some(reply) = &self.reply else {
            return Err(MessagingError::refused(
                "ack",
                std::io::Error::other("not a JetStream message"),
            ));
        };
        self.client
            .request(reply.clone(), AckKind::Ack.into())
            .await
            .map(drop)
            .map_err(|err| MessagingError::unavailable("ack", err))
    }

    async fn nak(&self, delay: Duration) -> Result<(), MessagingError> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    async fn term(&self) -> Result<(), MessagingError> {
        self.send(AckKind::Term).await
    }

    async fn in_progress(&self) -> Result<(), MessagingError> {
        self.send(AckKind::Progress).await
    }
}
