package metrics

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.yaml.in/yaml/v3"
)

// names returns the fully qualified names of every collector.
func names(t *testing.T) map[string]bool {
	m := New(prometheus.NewRegistry())
	out := map[string]bool{}
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, c := range m.Collectors() {
		ch := make(chan *prometheus.Desc, 4)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if sm := re.FindStringSubmatch(d.String()); sm != nil {
				out[sm[1]] = true
			}
		}
	}
	return out
}

// Every metric named by the alert rules and the dashboard must exist.
func TestAlertsAndDashboardNameRealMetrics(t *testing.T) {
	have := names(t)
	for _, name := range []string{
		"walcast_ws_connections", "walcast_subscriptions", "walcast_wal_changes_total", "walcast_events_sent_total",
		"walcast_replication_lag_bytes", "walcast_delivery_latency_seconds", "walcast_slow_consumer_closes_total",
	} {
		if !have[name] {
			t.Errorf("docs/protocol.md §4 metric %s is missing", name)
		}
	}
	re := regexp.MustCompile(`walcast_[a-z_]+`)
	for _, file := range []string{"../../config/prometheus-alerts.yml", "../../config/grafana-dashboard.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, ref := range re.FindAllString(string(b), -1) {
			base := ref
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(ref, suffix) && have[strings.TrimSuffix(ref, suffix)] {
					base = strings.TrimSuffix(ref, suffix)
				}
			}
			if !have[base] {
				t.Errorf("%s names %s, which walcast does not export", file, ref)
			}
			found++
		}
		if found < 5 {
			t.Errorf("%s names only %d walcast metrics", file, found)
		}
	}
}

// The exposition passes the linter behind `promtool check metrics`.
func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.WALChanges.WithLabelValues("messages", "INSERT").Inc()
	m.EventsSent.WithLabelValues("message_created").Inc()
	m.Revocations.WithLabelValues("member_removed").Inc()
	m.WSRejected.WithLabelValues("unauthorized").Inc()
	m.ClientErrors.WithLabelValues("bad_request").Inc()
	m.MembershipLookups.WithLabelValues("hit").Inc()
	m.HTTPRequests.WithLabelValues("/healthz", "200").Inc()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The rules file is valid YAML with the shape Prometheus loads.
func TestAlertRulesShape(t *testing.T) {
	b, err := os.ReadFile("../../config/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Groups) == 0 || len(doc.Groups[0].Rules) < 5 {
		t.Fatalf("rules: %+v", doc)
	}
	for _, r := range doc.Groups[0].Rules {
		if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("incomplete rule %+v", r)
		}
	}
	var dash map[string]any
	db, _ := os.ReadFile("../../config/grafana-dashboard.json")
	if err := json.Unmarshal(db, &dash); err != nil || len(dash["panels"].([]any)) == 0 {
		t.Fatalf("dashboard: %v", err)
	}
}
