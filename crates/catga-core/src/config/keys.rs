//! Setting names, so every reader and every manifest test uses the same strings.

// NATS and the JetStream topology.
pub const NATS_URL: &str = "NATS__Url";
pub const NATS_QUEUE_GROUP: &str = "NATS__QueueGroup";
pub const NATS_STREAM_REPLICAS: &str = "NATS__StreamReplicas";
pub const NATS_ACK_WAIT_SECONDS: &str = "NATS__AckWaitSeconds";
/// The service's own NATS user (with [`NATS_PASSWORD`]).
pub const NATS_USER: &str = "NATS__User";
pub const NATS_PASSWORD: &str = "NATS__Password";
/// A `.creds` file (JWT and nkey seed) or an nkey seed file, instead of a user and password.
pub const NATS_CREDS_FILE: &str = "NATS__CredsFile";
/// PEM certificates of a private CA that signed the servers' `tls://` certificates.
pub const NATS_TLS_CA_FILE: &str = "NATS__TlsCaFile";

// Redis.
pub const REDIS_CONFIGURATION: &str = "Redis__Configuration";
pub const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
/// The password of the Sentinels, when it differs from the data password.
pub const REDIS_SENTINEL_PASSWORD: &str = "REDIS_SENTINEL_PASSWORD";
/// How many replicas must hold a write before it is acknowledged (`WAIT`).
pub const REDIS_WAIT_REPLICAS: &str = "Redis__WaitReplicas";
/// How long a write waits for those replicas.
pub const REDIS_WAIT_TIMEOUT_MS: &str = "Redis__WaitTimeoutMs";

// What the process runs on.
/// `embedded` or `distributed` (config::mode); the images set `distributed`.
pub const MODE: &str = "Catga__Mode";

// Idempotency, retries and shutdown.
pub const ENABLE_IDEMPOTENCY: &str = "Catga__EnableIdempotency";
pub const MAX_RETRY_ATTEMPTS: &str = "Catga__MaxRetryAttempts";
pub const IDEMPOTENCY_TTL_SECONDS: &str = "Catga__IdempotencyTtlSeconds";
pub const SHUTDOWN_GRACE_SECONDS: &str = "Catga__ShutdownGraceSeconds";
/// After how long order-api re-publishes the command of an order still pending.
pub const PENDING_REPUBLISH_SECONDS: &str = "Catga__PendingRepublishSeconds";
/// Days a final order (Confirmed, Rejected, Cancelled) is kept in Redis
/// before order-service removes it with its index entries (default 90).
pub const ORDERS_RETENTION_DAYS: &str = "Orders__RetentionDays";

// HTTP.
pub const HTTP_PORT: &str = "Http__Port";
/// order-api's port for `/health/*` and `/metrics`, apart from the public API.
pub const HTTP_OPS_PORT: &str = "Http__OpsPort";
pub const HTTP_MAX_BODY_BYTES: &str = "Http__MaxBodyBytes";
pub const HTTP_MAX_CONCURRENT_REQUESTS: &str = "Http__MaxConcurrentRequests";
/// Seconds a request's header may take to arrive; also how long a keep-alive
/// connection may stay idle.
pub const HTTP_HEADER_TIMEOUT_SECONDS: &str = "Http__HeaderTimeoutSeconds";
/// Seconds a request's body may take to arrive (order-api).
pub const HTTP_BODY_TIMEOUT_SECONDS: &str = "Http__BodyTimeoutSeconds";
/// Requests per second per caller (order-api); `0` turns the limit off.
pub const HTTP_RATE_LIMIT_PER_SECOND: &str = "Http__RateLimitPerSecond";
/// Requests a caller may send at once beyond its rate.
pub const HTTP_RATE_LIMIT_BURST: &str = "Http__RateLimitBurst";
/// `true` behind a proxy that appends the client to `X-Forwarded-For`.
pub const HTTP_TRUST_FORWARDED_FOR: &str = "Http__TrustForwardedFor";
/// Connections one replica serves at once.
pub const HTTP_MAX_CONNECTIONS: &str = "Http__MaxConnections";

// Traces and logs.
pub const OTEL_SERVICE_NAME: &str = "OpenTelemetry__ServiceName";
pub const OTEL_SERVICE_NAME_STD: &str = "OTEL_SERVICE_NAME";
pub const OTEL_JAEGER_ENDPOINT: &str = "OpenTelemetry__JaegerEndpoint";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const LOG_LEVEL: &str = "Logging__Level";
pub const LOG_FORMAT: &str = "Logging__Format";

// Notifications.
pub const WEBHOOK_URL: &str = "Notification__WebhookUrl";
pub const WEBHOOK_TIMEOUT_SECONDS: &str = "Notification__WebhookTimeoutSeconds";

// Authentication and administration.
pub const JWT_SECRET: &str = "Auth__JwtSecret";
/// The identity provider's issuer URL; its OIDC discovery document gives the keys.
pub const AUTH_AUTHORITY: &str = "Auth__Authority";
/// A JWKS URL used directly (instead of discovery).
pub const AUTH_JWKS_URL: &str = "Auth__JwksUrl";
/// The `iss` tokens must carry (defaults to the authority).
pub const AUTH_ISSUER: &str = "Auth__Issuer";
/// The `aud` tokens must carry, when set.
pub const AUTH_AUDIENCE: &str = "Auth__Audience";
/// The claim naming the customer (default `sub`).
pub const AUTH_CUSTOMER_CLAIM: &str = "Auth__CustomerClaim";
/// The claim carrying roles (default `role`).
pub const AUTH_ADMIN_CLAIM: &str = "Auth__AdminClaim";
/// The value of that claim that makes an admin (default `admin`).
pub const AUTH_ADMIN_VALUE: &str = "Auth__AdminValue";
/// `true` lets a distributed order-api run without authentication.
pub const AUTH_ALLOW_ANONYMOUS: &str = "Auth__AllowAnonymous";
