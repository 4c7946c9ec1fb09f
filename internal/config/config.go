package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/walcast/walcast/internal/clientaddr"
	"github.com/walcast/walcast/internal/events"
)

// Config is every setting of walcast. YAML keys are the snake_case names in
// the tags; config/walcast.yaml documents each.
type Config struct {
	// Source is where changes come from: "wal" (logical replication, the
	// default) or "notify" (the legacy triggers' NOTIFY channel).
	Source string `yaml:"source"`
	// MemoryLimit is Go's soft memory limit in bytes (debug.SetMemoryLimit):
	// the collector works harder as the heap nears it. 0 leaves it unset.
	MemoryLimit int64       `yaml:"memory_limit"`
	Notify      Notify      `yaml:"notify"`
	HTTP        HTTP        `yaml:"http"`
	Database    Database    `yaml:"database"`
	Replication Replication `yaml:"replication"`
	Auth        Auth        `yaml:"auth"`
	WS          WS          `yaml:"websocket"`
	Hub         Hub         `yaml:"hub"`
	Events      Events      `yaml:"events"`
	API         API         `yaml:"api"`
	Log         Log         `yaml:"log"`
	Demo        Demo        `yaml:"demo"`
	Cluster     Cluster     `yaml:"cluster"`
	Publish     Publish     `yaml:"publish"`
}

// Cluster turns on cluster mode when NATSURL is set: replicas share events
// through NATS JetStream (internal/cluster).
type Cluster struct {
	NATSURL       string        `yaml:"nats_url"`
	Stream        string        `yaml:"stream"`
	SubjectPrefix string        `yaml:"subject_prefix"`
	MaxAge        time.Duration `yaml:"max_age"`
	MaxMsgs       int64         `yaml:"max_msgs"`
	Duplicates    time.Duration `yaml:"duplicates"`
	FailoverPoll  time.Duration `yaml:"failover_poll"`
	// EphemeralSubject is the NATS core subject of broadcasts and
	// presence between replicas (outside the stream's subjects: never
	// stored). Each replica sends all of its presence every
	// PresenceInterval; one silent for PresenceTimeout is gone and its
	// users leave presence.
	EphemeralSubject string        `yaml:"ephemeral_subject"`
	PresenceInterval time.Duration `yaml:"presence_interval"`
	PresenceTimeout  time.Duration `yaml:"presence_timeout"`
}

// Demo turns on the demo page (make run does). It issues tokens to anyone:
// never in production.
type Demo struct {
	Enabled bool `yaml:"enabled"`
}

// Notify configures the NOTIFY source.
type Notify struct {
	Channel string `yaml:"channel"`
}

// HTTP is the listener.
type HTTP struct {
	Addr              string        `yaml:"addr"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included;
	// WriteTimeout writing a response; IdleTimeout a keep-alive
	// connection waiting for its next request. None applies to a
	// WebSocket once upgraded.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// MaxConnections caps plain HTTP connections (not WebSockets).
	MaxConnections  int           `yaml:"max_connections"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// DebugAddr, when set, serves net/http/pprof there (keep it private).
	DebugAddr string `yaml:"debug_addr"`
	// TrustedProxies are the addresses and CIDR prefixes of the proxies
	// in front of walcast (nginx, a load balancer): from their requests
	// only, the client address is read from Forwarded or X-Forwarded-For.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClientAddressHeader is the one header those proxies write the
	// client's address in: X-Forwarded-For or Forwarded.
	ClientAddressHeader string `yaml:"client_address_header"`
}

// Database is the app's PostgreSQL.
type Database struct {
	URL      string `yaml:"url"`
	MaxConns int32  `yaml:"max_conns"`
}

// Replication configures the slot and the stream.
type Replication struct {
	Slot           string        `yaml:"slot"`
	Publication    string        `yaml:"publication"`
	StatusInterval time.Duration `yaml:"status_interval"`
	StandbyTimeout time.Duration `yaml:"standby_timeout"`
	HoldBackAge    time.Duration `yaml:"hold_back_age"`
	HoldBackBytes  int64         `yaml:"hold_back_bytes"`
	ReconnectMin   time.Duration `yaml:"reconnect_min"`
	ReconnectMax   time.Duration `yaml:"reconnect_max"`
	MonitorEvery   time.Duration `yaml:"monitor_interval"`
	// PublicationCheck is how often walcast checks that every watched
	// table is still in the publication (a table dropped from it streams
	// nothing, and says nothing).
	PublicationCheck time.Duration `yaml:"publication_check_interval"`
	// DownNotice: a stream down longer than this is told to subscribers
	// (stream_down, then stream_up); 0 never tells them.
	DownNotice time.Duration `yaml:"down_notice"`
	// RetainedWALWarnBytes: above this much WAL kept for the slot, walcast
	// logs a warning and sets walcast_retained_wal_warning.
	RetainedWALWarnBytes int64 `yaml:"retained_wal_warn_bytes"`
}

// Auth configures tokens and membership.
type Auth struct {
	JWTSecret    string `yaml:"jwt_secret"`
	JWTAlgorithm string `yaml:"jwt_algorithm"`
	// JWKSURL is the identity provider's key set, for RS*, PS*, ES* and
	// EdDSA tokens; refreshed every JWKSRefresh, and at most every
	// JWKSUnknownKID when a token names a key it lacks.
	JWKSURL        string        `yaml:"jwks_url"`
	JWKSRefresh    time.Duration `yaml:"jwks_refresh_interval"`
	JWKSUnknownKID time.Duration `yaml:"jwks_unknown_kid_interval"`
	JWKSTimeout    time.Duration `yaml:"jwks_timeout"`
	// UserClaim names the claim holding the user id; Issuer and Audience,
	// when set, must match the token's iss and aud.
	UserClaim          string        `yaml:"user_claim"`
	Issuer             string        `yaml:"issuer"`
	Audience           string        `yaml:"audience"`
	Leeway             time.Duration `yaml:"leeway"`
	MembershipCacheTTL time.Duration `yaml:"membership_cache_ttl"`
	// MembershipWait bounds how long a check asks again while the database
	// has not yet made visible an access change the stream brought.
	MembershipWait time.Duration `yaml:"membership_wait"`
	// MembershipLookups caps concurrent membership lookups (pool share).
	MembershipLookups int `yaml:"membership_lookups"`
	// AccessMemory and AccessMemoryMax bound the remembered access changes.
	AccessMemory    time.Duration `yaml:"access_memory"`
	AccessMemoryMax int           `yaml:"access_memory_max"`
}

// WS configures sockets.
type WS struct {
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	PingInterval   time.Duration `yaml:"ping_interval"`
	ReadLimit      int64         `yaml:"read_limit"`
	AllowedOrigins []string      `yaml:"allowed_origins"`
	// Paths are where sockets are accepted; "/" takes only WebSocket
	// upgrades (anything else there is 404).
	Paths          []string `yaml:"paths"`
	FrameRate      float64  `yaml:"frame_rate"`
	FrameBurst     int      `yaml:"frame_burst"`
	MaxConnections int64    `yaml:"max_connections"`
	ConnectRate    float64  `yaml:"connect_rate"`
	ConnectBurst   int      `yaml:"connect_burst"`
	// WriteWorkers is how many goroutines write frames for all sockets;
	// 0 means one per CPU.
	WriteWorkers int `yaml:"write_workers"`
	// ForbiddenRate and ForbiddenBurst limit refused subscribes per user.
	ForbiddenRate  float64 `yaml:"forbidden_rate"`
	ForbiddenBurst int     `yaml:"forbidden_burst"`
	// EphemeralRate and EphemeralBurst limit one socket's broadcast and
	// presence frames; EphemeralMaxBytes bounds a payload or meta.
	EphemeralRate     float64 `yaml:"ephemeral_rate"`
	EphemeralBurst    int     `yaml:"ephemeral_burst"`
	EphemeralMaxBytes int     `yaml:"ephemeral_max_bytes"`
	// SSEStreamsPerUser caps one user's open Server-Sent Events streams
	// (GET /sse, the fallback for networks that block WebSockets).
	SSEStreamsPerUser int `yaml:"sse_streams_per_user"`
}

// Hub configures queues and history.
type Hub struct {
	QueueSize   int           `yaml:"queue_size"`
	HistorySize int           `yaml:"history_size"`
	HistoryAge  time.Duration `yaml:"history_age"`
	// HistoryBytes bounds what every project's history holds together.
	HistoryBytes              int64 `yaml:"history_bytes"`
	MaxSubscriptionsPerSocket int   `yaml:"max_subscriptions_per_socket"`
}

// Events configures the table mapping.
type Events struct {
	BulkThreshold int `yaml:"bulk_threshold"`
	// MaxTxnRows and MaxTxnBytes bound what one transaction keeps in
	// memory.
	MaxTxnRows  int            `yaml:"max_transaction_rows"`
	MaxTxnBytes int            `yaml:"max_transaction_bytes"`
	Tables      []events.Table `yaml:"tables"`
	// NumbersAsStrings sends integers past ±(2^53 − 1) and every numeric
	// as JSON strings (JavaScript rounds them as numbers).
	NumbersAsStrings bool `yaml:"numbers_as_strings"`
}

// API configures the REST routes.
type API struct {
	MaxBodyBytes    int64  `yaml:"max_body_bytes"`
	MaxMessageChars int    `yaml:"max_message_chars"`
	StatusToken     string `yaml:"status_token"`
	// AdminToken is the operator's credential of the admin routes (at
	// least 32 bytes); empty turns them off.
	AdminToken string `yaml:"admin_token"`
}

// Publish configures the events the application publishes (package
// publish, and POST /api/v1/projects/{id}/events).
type Publish struct {
	// Prefix is the logical decoding message prefix of published events.
	Prefix string `yaml:"prefix"`
	// MaxBytes bounds one published event's body.
	MaxBytes int `yaml:"max_bytes"`
	// Token is the service credential of the HTTP route (at least 32
	// bytes); empty turns the route off. Browsers never hold it.
	Token string `yaml:"token"`
	// ConfirmTimeout bounds how long the HTTP route waits for the event to
	// reach the stream before it answers without a position.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
}

// Log configures the logger.
type Log struct {
	Level string `yaml:"level"`
}

// Default returns the built-in settings.
func Default() Config {
	return Config{
		Source: "wal",
		Notify: Notify{Channel: "cache_invalidate"},
		HTTP: HTTP{Addr: "127.0.0.1:8080", TrustedProxies: []string{}, ClientAddressHeader: "X-Forwarded-For", ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxConnections: 1000, ShutdownTimeout: 10 * time.Second},
		Database: Database{MaxConns: 10},
		Replication: Replication{
			Slot: "walcast", Publication: "walcast",
			StatusInterval: time.Second, StandbyTimeout: 10 * time.Second,
			HoldBackAge: 5 * time.Minute, HoldBackBytes: 64 << 20,
			ReconnectMin: 100 * time.Millisecond, ReconnectMax: 30 * time.Second, MonitorEvery: 5 * time.Second, PublicationCheck: time.Second, DownNotice: 30 * time.Second,
			RetainedWALWarnBytes: 1 << 30,
		},
		Auth: Auth{JWTAlgorithm: "HS256", Leeway: 5 * time.Second, UserClaim: "sub", JWKSRefresh: time.Hour, JWKSUnknownKID: 30 * time.Second, JWKSTimeout: 10 * time.Second, MembershipCacheTTL: 0,
			MembershipWait: 2 * time.Second, MembershipLookups: 5,
			AccessMemory: 10 * time.Minute, AccessMemoryMax: 100_000},
		WS: WS{Paths: []string{"/ws", "/"}, WriteTimeout: 10 * time.Second, PingInterval: 25 * time.Second, ReadLimit: 4096, FrameRate: 20, FrameBurst: 50,
			MaxConnections: 20000, ConnectRate: 20, ConnectBurst: 50, ForbiddenRate: 1, ForbiddenBurst: 20,
			EphemeralRate: 10, EphemeralBurst: 20, EphemeralMaxBytes: 1024, SSEStreamsPerUser: 10},
		Hub:     Hub{QueueSize: 1024, HistorySize: 1000, HistoryAge: 10 * time.Minute, HistoryBytes: 64 << 20, MaxSubscriptionsPerSocket: 100},
		Events:  Events{BulkThreshold: 500, MaxTxnRows: 10_000, MaxTxnBytes: 16 << 20, Tables: events.DefaultTables()},
		API:     API{MaxBodyBytes: 64 << 10, MaxMessageChars: 4000},
		Log:     Log{Level: "info"},
		Publish: Publish{Prefix: "walcast", MaxBytes: 64 << 10, ConfirmTimeout: 5 * time.Second},
		Cluster: Cluster{Stream: "WALCAST", SubjectPrefix: "walcast.events", MaxAge: time.Hour, MaxMsgs: 1_000_000,
			Duplicates: 10 * time.Minute, FailoverPoll: time.Second,
			EphemeralSubject: "walcast.ephemeral", PresenceInterval: time.Second, PresenceTimeout: 5 * time.Second},
	}
}

// DefaultPath is read when no --config is given and the file exists.
const DefaultPath = "config/walcast.yaml"

// Load builds the configuration from args (flags after the subcommand),
// getenv and the YAML file. It returns the remaining positional arguments.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, []string, error) {
	fset := flag.NewFlagSet("walcast", flag.ContinueOnError)
	fset.SetOutput(stderr)
	path := fset.String("config", "", "path of the YAML config file (default "+DefaultPath+" when present)")
	addr := fset.String("http-addr", "", "listen address, overrides http.addr")
	level := fset.String("log-level", "", "debug, info, warn or error")
	if err := fset.Parse(args); err != nil {
		return Config{}, nil, err
	}
	cfg := Default()
	file, explicit := *path, *path != ""
	if !explicit {
		if file = getenv("WALCAST_CONFIG"); file != "" {
			explicit = true
		} else {
			file = DefaultPath
		}
	}
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if err := Parse(data, &cfg); err != nil {
			return Config{}, nil, fmt.Errorf("config %s: %w", file, err)
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	default:
		return Config{}, nil, fmt.Errorf("config: %w", err)
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return Config{}, nil, err
	}
	if *addr != "" {
		cfg.HTTP.Addr = *addr
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	return cfg, fset.Args(), nil
}

// Parse reads YAML into cfg; unknown keys are errors.
func Parse(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// EnvNames lists the environment variables that override settings.
func EnvNames() []string {
	out := make([]string, 0, len(envVars)+1)
	out = append(out, "WALCAST_CONFIG")
	for _, e := range envVars {
		out = append(out, e.name)
	}
	return out
}

// envVars maps each environment override to its setting.
var envVars = []struct {
	name string
	set  func(*Config, string) error
}{
	{"WALCAST_DATABASE_URL", func(c *Config, v string) error { c.Database.URL = v; return nil }},
	{"WALCAST_HTTP_ADDR", func(c *Config, v string) error { c.HTTP.Addr = v; return nil }},
	{"WALCAST_JWT_SECRET", func(c *Config, v string) error { c.Auth.JWTSecret = v; return nil }},
	{"WALCAST_JWT_ALGORITHM", func(c *Config, v string) error { c.Auth.JWTAlgorithm = v; return nil }},
	{"WALCAST_JWKS_URL", func(c *Config, v string) error { c.Auth.JWKSURL = v; return nil }},
	{"WALCAST_JWT_USER_CLAIM", func(c *Config, v string) error { c.Auth.UserClaim = v; return nil }},
	{"WALCAST_JWT_ISSUER", func(c *Config, v string) error { c.Auth.Issuer = v; return nil }},
	{"WALCAST_JWT_AUDIENCE", func(c *Config, v string) error { c.Auth.Audience = v; return nil }},
	{"WALCAST_SLOT_NAME", func(c *Config, v string) error { c.Replication.Slot = v; return nil }},
	{"WALCAST_PUBLICATION_NAME", func(c *Config, v string) error { c.Replication.Publication = v; return nil }},
	{"WALCAST_STATUS_TOKEN", func(c *Config, v string) error { c.API.StatusToken = v; return nil }},
	{"WALCAST_ADMIN_TOKEN", func(c *Config, v string) error { c.API.AdminToken = v; return nil }},
	{"WALCAST_PUBLISH_TOKEN", func(c *Config, v string) error { c.Publish.Token = v; return nil }},
	{"WALCAST_PUBLISH_PREFIX", func(c *Config, v string) error { c.Publish.Prefix = v; return nil }},
	{"WALCAST_DEBUG_ADDR", func(c *Config, v string) error { c.HTTP.DebugAddr = v; return nil }},
	{"WALCAST_SOURCE", func(c *Config, v string) error { c.Source = v; return nil }},
	{"WALCAST_DEMO", func(c *Config, v string) error { return setBool(&c.Demo.Enabled, v) }},
	{"WALCAST_NUMBERS_AS_STRINGS", func(c *Config, v string) error { return setBool(&c.Events.NumbersAsStrings, v) }},
	{"WALCAST_NATS_URL", func(c *Config, v string) error { c.Cluster.NATSURL = v; return nil }},
	{"WALCAST_NATS_STREAM", func(c *Config, v string) error { c.Cluster.Stream = v; return nil }},
	{"WALCAST_LOG_LEVEL", func(c *Config, v string) error { c.Log.Level = v; return nil }},
	{"WALCAST_PUBLICATION_CHECK_INTERVAL", func(c *Config, v string) error { return setDuration(&c.Replication.PublicationCheck, v) }},
	{"WALCAST_MEMORY_LIMIT", func(c *Config, v string) error { return setInt64(&c.MemoryLimit, v) }},
	{"WALCAST_DOWN_NOTICE", func(c *Config, v string) error { return setDuration(&c.Replication.DownNotice, v) }},
	{"WALCAST_HOLD_BACK_AGE", func(c *Config, v string) error { return setDuration(&c.Replication.HoldBackAge, v) }},
	{"WALCAST_HOLD_BACK_BYTES", func(c *Config, v string) error { return setInt64(&c.Replication.HoldBackBytes, v) }},
	{"WALCAST_QUEUE_SIZE", func(c *Config, v string) error { return setInt(&c.Hub.QueueSize, v) }},
	{"WALCAST_HISTORY_SIZE", func(c *Config, v string) error { return setInt(&c.Hub.HistorySize, v) }},
	{"WALCAST_WRITE_WORKERS", func(c *Config, v string) error { return setInt(&c.WS.WriteWorkers, v) }},
	{"WALCAST_MAX_CONNECTIONS", func(c *Config, v string) error { return setInt64(&c.WS.MaxConnections, v) }},
	{"WALCAST_CONNECT_RATE", func(c *Config, v string) error {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.WS.ConnectRate = x
		return nil
	}},
	{"WALCAST_BULK_THRESHOLD", func(c *Config, v string) error { return setInt(&c.Events.BulkThreshold, v) }},
	{"WALCAST_CLIENT_ADDRESS_HEADER", func(c *Config, v string) error { c.HTTP.ClientAddressHeader = v; return nil }},
	{"WALCAST_TRUSTED_PROXIES", func(c *Config, v string) error {
		c.HTTP.TrustedProxies = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
		return nil
	}},
	{"WALCAST_ALLOWED_ORIGINS", func(c *Config, v string) error {
		c.WS.AllowedOrigins = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
		return nil
	}},
}

func applyEnv(cfg *Config, getenv func(string) string) error {
	for _, e := range envVars {
		if v := getenv(e.name); v != "" {
			if err := e.set(cfg, v); err != nil {
				return fmt.Errorf("config: %s: %w", e.name, err)
			}
		}
	}
	return nil
}

func setDuration(d *time.Duration, v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 5m", v)
	}
	*d = x
	return nil
}

// setBool reads the usual spellings of a boolean; anything else is an
// error, never a silent false.
func setBool(b *bool, v string) error {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		*b = true
	case "0", "false", "no", "off":
		*b = false
	default:
		return fmt.Errorf("%q is not a boolean (1/0, true/false, yes/no, on/off)", v)
	}
	return nil
}

func setInt(n *int, v string) error {
	x, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	*n = x
	return nil
}

func setInt64(n *int64, v string) error {
	x, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	*n = x
	return nil
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate checks the settings serve needs and names the first that is wrong.
func (c *Config) Validate() error {
	bad := func(setting, why string) error { return fmt.Errorf("config: %s %s", setting, why) }
	switch {
	case c.Database.URL == "":
		return bad("database.url (WALCAST_DATABASE_URL)", "is required")
	case c.HTTP.Addr == "":
		return bad("http.addr (WALCAST_HTTP_ADDR)", "is required")
	case c.Auth.JWTSecret == "":
		return bad("auth.jwt_secret (WALCAST_JWT_SECRET)", "is required")
	case len(c.Auth.JWTSecret) < 16:
		return bad("auth.jwt_secret (WALCAST_JWT_SECRET)", "must be at least 16 bytes")
	case !slices.Contains([]string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}, c.Auth.JWTAlgorithm):
		return bad("auth.jwt_algorithm (WALCAST_JWT_ALGORITHM)", "must be HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA")
	case !strings.HasPrefix(c.Auth.JWTAlgorithm, "HS") && c.Auth.JWKSURL == "":
		return bad("auth.jwks_url (WALCAST_JWKS_URL)", "is required for "+c.Auth.JWTAlgorithm+" tokens (the identity provider's key set)")
	case c.Auth.JWKSURL != "" && strings.HasPrefix(c.Auth.JWTAlgorithm, "HS"):
		return bad("auth.jwt_algorithm (WALCAST_JWT_ALGORITHM)", "must be the identity provider's (e.g. RS256) when auth.jwks_url is set")
	case c.Auth.JWKSURL != "" && !strings.HasPrefix(c.Auth.JWKSURL, "https://") && !strings.HasPrefix(c.Auth.JWKSURL, "http://"):
		return bad("auth.jwks_url (WALCAST_JWKS_URL)", "must be an http(s) URL")
	case c.Auth.JWKSURL != "" && (c.Auth.JWKSRefresh < time.Minute/6 || c.Auth.JWKSUnknownKID <= 0):
		return bad("auth.jwks_refresh_interval", "must be at least 10s, and jwks_unknown_kid_interval positive")
	case c.Auth.JWKSURL != "" && c.Auth.JWKSTimeout <= 0:
		return bad("auth.jwks_timeout", "must be positive")
	case c.Auth.UserClaim == "":
		return bad("auth.user_claim (WALCAST_JWT_USER_CLAIM)", "must name the claim holding the user id")
	case c.Auth.MembershipCacheTTL < 0 || c.Auth.MembershipCacheTTL > c.Auth.AccessMemory:
		// A cached answer must expire before the access changes it may
		// predate are forgotten (docs/access.md).
		return bad("auth.membership_cache_ttl", "must be between 0 and auth.access_memory")
	case c.Auth.MembershipWait <= 0 || c.Auth.MembershipLookups < 1 || c.Auth.AccessMemoryMax < 1:
		return bad("auth.membership_wait, membership_lookups, access_memory_max", "must be positive")
	case !identRE.MatchString(c.Replication.Slot):
		return bad("replication.slot (WALCAST_SLOT_NAME)", "must be lowercase letters, digits and '_' (at most 63)")
	case !identRE.MatchString(c.Replication.Publication):
		return bad("replication.publication (WALCAST_PUBLICATION_NAME)", "must be lowercase letters, digits and '_' (at most 63)")
	case c.Replication.StatusInterval <= 0:
		return bad("replication.status_interval", "must be positive")
	case c.Replication.StandbyTimeout < c.Replication.StatusInterval:
		return bad("replication.standby_timeout", "must be at least replication.status_interval")
	case c.Replication.ReconnectMin <= 0 || c.Replication.ReconnectMax < c.Replication.ReconnectMin:
		return bad("replication.reconnect_min", "must be positive, and reconnect_max at least reconnect_min")
	case c.Replication.MonitorEvery <= 0 || c.Replication.PublicationCheck <= 0:
		return bad("replication.monitor_interval", "and publication_check_interval must be positive")
	case c.Replication.HoldBackAge < 0:
		return bad("replication.hold_back_age", "must not be negative")
	case c.Replication.HoldBackBytes < 0:
		return bad("replication.hold_back_bytes", "must not be negative")
	case c.Hub.QueueSize < 1:
		return bad("hub.queue_size", "must be at least 1")
	case c.Hub.HistorySize < 0:
		return bad("hub.history_size", "must not be negative")
	case c.Hub.MaxSubscriptionsPerSocket < 0:
		return bad("hub.max_subscriptions_per_socket", "must not be negative")
	case c.WS.WriteTimeout <= 0:
		return bad("websocket.write_timeout", "must be positive")
	case c.WS.PingInterval < 0 || (c.WS.PingInterval > 0 && c.WS.PingInterval < time.Second):
		// A client answers every ping, and its answers count against
		// frame_rate: pings much faster would close the clients that
		// answer them.
		return bad("websocket.ping_interval", "must be 0 (no pings) or at least 1s")
	case c.WS.ReadLimit < 256:
		return bad("websocket.read_limit", "must be at least 256 bytes")
	case c.WS.MaxConnections < 0:
		return bad("websocket.max_connections", "must not be negative")
	case c.WS.WriteWorkers < 0:
		return bad("websocket.write_workers", "must not be negative (0 means one per CPU)")
	case c.WS.ConnectRate < 0 || c.WS.ConnectBurst < 0 || (c.WS.ConnectRate > 0 && c.WS.ConnectBurst < 1):
		return bad("websocket.connect_rate", "and connect_burst must not be negative, and the burst at least 1 when the rate is set")
	case c.WS.FrameRate <= 0 || c.WS.FrameBurst < 1:
		return bad("websocket.frame_rate", "must be positive and frame_burst at least 1")
	case c.WS.ForbiddenRate < 0 || c.WS.ForbiddenBurst < 0 || (c.WS.ForbiddenRate > 0 && c.WS.ForbiddenBurst < 1):
		return bad("websocket.forbidden_rate", "and forbidden_burst must not be negative, and the burst at least 1 when the rate is set")
	case !validProxies(c.HTTP.TrustedProxies, ""):
		return bad("http.trusted_proxies (WALCAST_TRUSTED_PROXIES)", "must be IP addresses or CIDR prefixes")
	case !validProxies(nil, c.HTTP.ClientAddressHeader):
		return bad("http.client_address_header (WALCAST_CLIENT_ADDRESS_HEADER)", "must be X-Forwarded-For or Forwarded")
	case !validSocketPaths(c.WS.Paths):
		return bad("websocket.paths", "must list one to eight paths, each starting with '/', none of them /api/…, /metrics, /healthz, /readyz, /walcast-client.js or /demo/…")
	case c.WS.SSEStreamsPerUser < 1:
		return bad("websocket.sse_streams_per_user", "must be at least 1")
	case c.WS.EphemeralRate <= 0 || c.WS.EphemeralBurst < 1:
		return bad("websocket.ephemeral_rate", "must be positive and ephemeral_burst at least 1")
	case c.WS.EphemeralMaxBytes < 2 || int64(c.WS.EphemeralMaxBytes) >= c.WS.ReadLimit:
		return bad("websocket.ephemeral_max_bytes", "must be at least 2 and less than read_limit")
	case c.Events.BulkThreshold < 0:
		return bad("events.bulk_threshold", "must not be negative")
	case c.API.MaxBodyBytes < 1024:
		return bad("api.max_body_bytes", "must be at least 1024")
	case c.API.MaxMessageChars < 1:
		return bad("api.max_message_chars", "must be at least 1")
	case c.Publish.Prefix == "" || c.Publish.Prefix == events.GapPrefix:
		return bad("publish.prefix (WALCAST_PUBLISH_PREFIX)", "must be set, and not "+events.GapPrefix+" (walcast's own)")
	case c.Publish.MaxBytes < 256 || c.Publish.MaxBytes > 1<<20:
		return bad("publish.max_bytes", "must be between 256 and 1048576")
	case c.Publish.Token != "" && len(c.Publish.Token) < 32:
		return bad("publish.token (WALCAST_PUBLISH_TOKEN)", "must be at least 32 bytes")
	case c.API.AdminToken != "" && len(c.API.AdminToken) < 32:
		return bad("api.admin_token (WALCAST_ADMIN_TOKEN)", "must be at least 32 bytes")
	case c.API.AdminToken != "" && (c.API.AdminToken == c.API.StatusToken || c.API.AdminToken == c.Publish.Token || c.API.AdminToken == c.Auth.JWTSecret):
		return bad("api.admin_token (WALCAST_ADMIN_TOKEN)", "must differ from the status and publish tokens and the jwt secret")
	case c.Publish.Token != "" && (c.Publish.Token == c.API.StatusToken || c.Publish.Token == c.Auth.JWTSecret):
		return bad("publish.token (WALCAST_PUBLISH_TOKEN)", "must differ from api.status_token and auth.jwt_secret")
	case c.Publish.ConfirmTimeout <= 0:
		return bad("publish.confirm_timeout", "must be positive")
	}
	switch c.Source {
	case "wal", "notify":
	default:
		return bad("source (WALCAST_SOURCE)", "must be wal or notify")
	}
	if c.Source == "notify" && !identRE.MatchString(c.Notify.Channel) {
		return bad("notify.channel", "must be lowercase letters, digits and '_'")
	}
	if c.Cluster.NATSURL != "" {
		switch {
		case c.Source != "wal":
			return bad("cluster.nats_url", "needs source: wal")
		case c.Cluster.Stream == "" || c.Cluster.SubjectPrefix == "":
			return bad("cluster.stream", "and cluster.subject_prefix are required in cluster mode")
		case c.Cluster.FailoverPoll <= 0:
			return bad("cluster.failover_poll", "must be positive")
		case c.Cluster.EphemeralSubject == "" || strings.HasPrefix(c.Cluster.EphemeralSubject+".", c.Cluster.SubjectPrefix+"."):
			return bad("cluster.ephemeral_subject", "is required and must not be under cluster.subject_prefix (the stream would store it)")
		case c.Cluster.PresenceInterval <= 0 || c.Cluster.PresenceTimeout < 2*c.Cluster.PresenceInterval:
			return bad("cluster.presence_timeout", "must be at least twice cluster.presence_interval, which must be positive")
		case c.Cluster.Duplicates < c.Replication.HoldBackAge:
			// A new leader republishes the hold-back window; JetStream must
			// still recognise those message ids.
			return bad("cluster.duplicates", "must be at least replication.hold_back_age")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level (WALCAST_LOG_LEVEL)", "must be debug, info, warn or error")
	}
	if _, err := events.NewMapper(events.Options{Tables: c.Events.Tables, BulkThreshold: c.Events.BulkThreshold}); err != nil {
		return bad("events.tables", strings.TrimPrefix(err.Error(), "events: "))
	}
	members := 0
	for _, t := range c.Events.Tables {
		if t.UserIDColumn != "" {
			members++
		}
	}
	if members != 1 {
		return bad("events.tables", "must mark exactly one membership table with user_id_column")
	}
	return nil
}

// MembershipTable returns the table marked with user_id_column.
func (c *Config) MembershipTable() events.Table {
	for _, t := range c.Events.Tables {
		if t.UserIDColumn != "" {
			return t
		}
	}
	return events.Table{}
}

// ProjectTable returns the table marked revokes_project.
func (c *Config) ProjectTable() events.Table {
	for _, t := range c.Events.Tables {
		if t.RevokesProject {
			return t
		}
	}
	return events.Table{}
}

// validSocketPaths checks websocket.paths: none may shadow a route.
func validSocketPaths(paths []string) bool {
	if len(paths) == 0 || len(paths) > 8 {
		return false
	}
	for _, p := range paths {
		switch {
		case !strings.HasPrefix(p, "/"), strings.ContainsAny(p, " ?#*{}"),
			p == "/metrics", p == "/healthz", p == "/readyz", p == "/walcast-client.js", p == "/sse",
			strings.HasPrefix(p, "/api/"), p == "/api", strings.HasPrefix(p, "/demo"):
			return false
		}
	}
	return true
}

func validProxies(list []string, header string) bool {
	_, err := clientaddr.New(list, header)
	return err == nil
}
