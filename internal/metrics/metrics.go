package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds every collector walcast exports.
type Metrics struct {
	// Sockets and subscriptions.
	WSConnections      prometheus.Gauge
	Subscriptions      prometheus.Gauge
	SlowConsumerCloses prometheus.Counter
	WSRejected         *prometheus.CounterVec // reason
	PingsDropped       prometheus.Counter
	FloodCloses        prometheus.Counter
	ClientErrors       *prometheus.CounterVec // code

	// Delivery.
	EventsSent      *prometheus.CounterVec // type
	DeliveryLatency prometheus.Histogram
	ResyncsSent     prometheus.Counter
	StreamGaps      prometheus.Counter
	Revocations     *prometheus.CounterVec // reason
	HistoryEvents   prometheus.Gauge
	HubTopics       prometheus.Gauge

	// WAL stream.
	WALChanges          *prometheus.CounterVec // table, action
	WALTransactions     prometheus.Counter
	WALConnected        prometheus.Gauge
	WALReconnects       prometheus.Counter
	WALDecodeErrors     prometheus.Counter
	MappingProblems     prometheus.Counter
	PublishedEvents     prometheus.Counter
	HTTPPublished       prometheus.Counter
	EphemeralDropped    prometheus.Counter
	JWKSRefreshErrors   prometheus.Counter
	PublishedRefused    *prometheus.CounterVec // reason
	ReplicationLagBytes prometheus.Gauge
	RetainedWALBytes    prometheus.Gauge
	RetainedWALWarning  prometheus.Gauge
	LastEventTimestamp  prometheus.Gauge
	WALReceiveLatency   prometheus.Histogram

	// Auth and access.
	MembershipLookups *prometheus.CounterVec // result: hit, miss
	// StaleLookups counts membership answers refused because they were
	// older than an access change the stream had already brought.
	StaleLookups prometheus.Counter
	// AccessFailClosed counts revocations of every subscription walcast
	// might not be allowed to keep, by reason.
	AccessFailClosed *prometheus.CounterVec // reason: unmappable_change, publication_missing
	AccessLedger     prometheus.Gauge
	SchemaProblems   prometheus.Counter

	// HTTP.
	HTTPRequests     *prometheus.CounterVec // route, code
	HTTPConnsEvicted prometheus.Counter

	// Cluster mode.
	ClusterLeader         prometheus.Gauge
	ClusterPublishSeconds prometheus.Histogram
	ClusterPublishErrors  prometheus.Counter
	ClusterConsumerLag    prometheus.Gauge
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		WSConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_ws_connections", Help: "Open WebSocket connections."}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_subscriptions", Help: "Live project subscriptions over all sockets."}),
		SlowConsumerCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_slow_consumer_closes_total", Help: "Sockets closed with 4008 because their send queue overflowed."}),
		WSRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_ws_rejected_total", Help: "WebSocket upgrades refused, by reason."}, []string{"reason"}),
		PingsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_ws_pings_dropped_total", Help: "Client WebSocket pings left unanswered because the socket was over its frame rate."}),
		FloodCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_ws_flood_closes_total", Help: "Sockets closed with 1008 for sending frames (pings included) far past their rate."}),
		ClientErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_client_errors_total", Help: "Error frames sent to clients, by code."}, []string{"code"}),
		EventsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_events_sent_total", Help: "Event frames written to sockets, by event type."}, []string{"type"}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "walcast_delivery_latency_seconds",
			Help:    "Time from a transaction's commit to the socket write of its events (one observation per transaction and socket).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		ResyncsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_resyncs_sent_total", Help: "resync_required frames sent."}),
		StreamGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_stream_gaps_total", Help: "Times changes may have been lost (slot dropped or moved, a table back in the publication, a change that could not be mapped) and every project was told to resync."}),
		Revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_subscription_revocations_total", Help: "subscription_revoked frames sent, by reason."}, []string{"reason"}),
		HistoryEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_history_events", Help: "Events retained in the per-project histories for resume."}),
		HubTopics: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_hub_projects", Help: "Projects with subscribers or retained history in the hub."}),
		WALChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_wal_changes_total", Help: "Row changes read from the WAL on watched tables."}, []string{"table", "action"}),
		WALTransactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_wal_transactions_total", Help: "Committed transactions handed to the hub."}),
		WALConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_wal_connected", Help: "1 while the replication stream is live."}),
		WALReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_wal_reconnects_total", Help: "Replication connections lost and retried."}),
		WALDecodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_wal_decode_errors_total", Help: "WAL messages that could not be decoded; the stream stops before them."}),
		MappingProblems: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_mapping_problems_total", Help: "Changes that could not be mapped; each failed closed (a conservative revocation or resync_required)."}),
		PublishedEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_published_events_total", Help: "Events the application published (from SQL or POST /api/v1/projects/{id}/events) that walcast delivers."}),
		JWKSRefreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_jwks_refresh_errors_total", Help: "Failed fetches of the identity provider's key set (the keys held go on verifying)."}),
		EphemeralDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_cluster_ephemeral_dropped_total", Help: "Broadcasts and presence changes not sent to the other replicas (queue full or NATS error); presence is put right by the next snapshot."}),
		HTTPPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_http_published_total", Help: "Events written to the WAL by POST /api/v1/projects/{id}/events (committed)."}),
		PublishedRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_published_refused_total", Help: "Published events read from the WAL and refused (delivered to nobody), by reason."}, []string{"reason"}),
		ReplicationLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_replication_lag_bytes", Help: "WAL bytes between the server's current position and the slot's confirmed position."}),
		RetainedWALBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_retained_wal_bytes", Help: "WAL bytes the slot makes the primary keep (current position minus restart_lsn)."}),
		RetainedWALWarning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_retained_wal_warning", Help: "1 while the slot retains more WAL than replication.retained_wal_warn_bytes."}),
		LastEventTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_last_event_timestamp_seconds", Help: "Commit time of the last transaction handed to the hub, as a Unix time."}),
		MembershipLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_membership_lookups_total", Help: "Membership checks, by result (hit: cached; miss: asked the database)."}, []string{"result"}),
		StaleLookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_membership_stale_lookups_total", Help: "Membership answers refused because their snapshot predates an access change already read from the WAL."}),
		AccessFailClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_access_fail_closed_total", Help: "Conservative revocations of every subscription an access change might concern, because walcast could not tell whose access it ended, by reason."}, []string{"reason"}),
		AccessLedger: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walcast_access_ledger_entries", Help: "Recent access changes remembered to check membership lookups against."}),
		SchemaProblems: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_schema_problems_total", Help: "Watched tables the stream showed in a shape walcast cannot map (a column missing, a replica identity too narrow)."}),
		HTTPConnsEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "walcast_http_connections_evicted_total", Help: "Plain HTTP connections closed, not serving a request, to stay under http.max_connections."}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walcast_http_requests_total", Help: "HTTP requests answered, by route pattern and status code."}, []string{"route", "code"}),
	}
	m.ClusterLeader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "walcast_cluster_leader", Help: "1 while this replica holds the replication slot (cluster mode), else 0."})
	m.ClusterPublishSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "walcast_cluster_publish_seconds", Help: "Time for JetStream to acknowledge one transaction's events.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}})
	m.ClusterPublishErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "walcast_cluster_publish_errors_total", Help: "JetStream publishes that failed; the transaction is streamed again."})
	m.ClusterConsumerLag = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "walcast_cluster_consumer_lag_messages", Help: "Stream messages this replica has not consumed yet."})
	m.WALReceiveLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "walcast_wal_receive_latency_seconds",
		Help:    "Time from a transaction's commit to walcast having decoded it from the WAL (before fan-out).",
		Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .05, .25, 1, 5},
	})
	for _, reason := range []string{FailClosedUnmappable, FailClosedPublication} {
		m.AccessFailClosed.WithLabelValues(reason)
	}
	reg.MustRegister(m.Collectors()...)
	return m
}

// Collectors lists every collector of m, for registration and for checks.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.WSConnections, m.Subscriptions, m.SlowConsumerCloses, m.WSRejected, m.PingsDropped, m.FloodCloses, m.ClientErrors,
		m.EventsSent, m.DeliveryLatency, m.ResyncsSent, m.StreamGaps, m.Revocations, m.HistoryEvents, m.HubTopics,
		m.WALChanges, m.WALTransactions, m.WALConnected, m.WALReconnects, m.WALDecodeErrors,
		m.MappingProblems, m.PublishedEvents, m.HTTPPublished, m.EphemeralDropped, m.JWKSRefreshErrors, m.PublishedRefused, m.ReplicationLagBytes, m.RetainedWALBytes, m.RetainedWALWarning, m.LastEventTimestamp,
		m.MembershipLookups, m.StaleLookups, m.AccessFailClosed, m.AccessLedger, m.SchemaProblems, m.HTTPRequests, m.HTTPConnsEvicted,
		m.WALReceiveLatency,
		m.ClusterLeader, m.ClusterPublishSeconds, m.ClusterPublishErrors, m.ClusterConsumerLag,
	}
}

// Reasons of AccessFailClosed.
const (
	FailClosedUnmappable  = "unmappable_change"
	FailClosedPublication = "publication_missing"
)

// PublishRefusals are the reasons of walcast_published_refused_total
// (events.Refused*).
var PublishRefusals = []string{"malformed", "project_id", "type", "reserved_type", "data", "too_large", "overflow"}

// Prime creates every series whose labels are known at start at zero, so
// that a scrape right after start shows them (dashboards and rate() alerts
// need a series before its first increment): the changes of each watched
// table (tables, as the source labels them) by action, the events of each
// type, and the fixed reasons of the other labelled counters.
func (m *Metrics) Prime(tables, eventTypes []string) {
	for _, t := range tables {
		for _, a := range []string{"INSERT", "UPDATE", "DELETE", "TRUNCATE"} {
			m.WALChanges.WithLabelValues(t, a)
		}
	}
	for _, typ := range eventTypes {
		m.EventsSent.WithLabelValues(typ)
	}
	for _, r := range []string{"member_removed", "project_deleted"} {
		m.Revocations.WithLabelValues(r)
	}
	for _, r := range []string{FailClosedUnmappable, FailClosedPublication} {
		m.AccessFailClosed.WithLabelValues(r)
	}
	for _, r := range []string{"hit", "miss"} {
		m.MembershipLookups.WithLabelValues(r)
	}
	for _, r := range PublishRefusals {
		m.PublishedRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ip_rate", "unauthorized", "connection_cap", "handshake"} {
		m.WSRejected.WithLabelValues(r)
	}
}
