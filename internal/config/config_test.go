package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func valid() map[string]string {
	return map[string]string{"WALCAST_DATABASE_URL": "postgres://x@localhost/db", "WALCAST_JWT_SECRET": "0123456789abcdef"}
}

func TestCommittedExampleIsValidAndMatchesDefaults(t *testing.T) {
	data, err := os.ReadFile("../../config/walcast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	if err := Parse(data, &cfg); err != nil {
		t.Fatalf("config/walcast.yaml: %v", err)
	}
	cfg.Database.URL, cfg.Auth.JWTSecret = "postgres://x@localhost/db", "0123456789abcdef"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	def := Default()
	def.Database.URL, def.Auth.JWTSecret = cfg.Database.URL, cfg.Auth.JWTSecret
	if len(cfg.WS.AllowedOrigins) == 0 {
		cfg.WS.AllowedOrigins = nil
	}
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("config/walcast.yaml drifted from Default():\n%+v\nvs\n%+v", cfg, def)
	}
}

func TestLoadLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.yaml")
	if err := os.WriteFile(path, []byte("http:\n  addr: 0.0.0.0:9000\nhub:\n  queue_size: 7\nreplication:\n  hold_back_age: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := valid()
	e["WALCAST_SLOT_NAME"] = "from_env"
	e["WALCAST_HOLD_BACK_AGE"] = "30s"
	cfg, rest, err := Load([]string{"--config", path, "--log-level", "debug", "extra"}, env(e), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "0.0.0.0:9000" || cfg.Hub.QueueSize != 7 || cfg.Replication.Slot != "from_env" ||
		cfg.Replication.HoldBackAge != 30*time.Second || cfg.Log.Level != "debug" || len(rest) != 1 {
		t.Fatalf("layers: %+v %v", cfg, rest)
	}
	cfg, _, err = Load([]string{"--config", path, "--http-addr", "127.0.0.1:1"}, env(valid()), io.Discard)
	if err != nil || cfg.HTTP.Addr != "127.0.0.1:1" {
		t.Fatalf("flag over file: %v %v", cfg.HTTP.Addr, err)
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"unknown key", "htp:\n  addr: x\n", valid(), "htp"},
		{"bad duration", "hub:\n  history_age: soon\n", valid(), "soon"},
		{"missing file", "", valid(), "no such file"},
		{"bad env number", "", map[string]string{"WALCAST_QUEUE_SIZE": "lots"}, "WALCAST_QUEUE_SIZE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"--config", filepath.Join(dir, "missing.yaml")}
			if c.file != "" {
				args = []string{"--config", write(c.file)}
			}
			if c.name == "bad env number" {
				args = nil
			}
			_, _, err := Load(args, env(c.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]func(*Config){
		"database.url":            func(c *Config) { c.Database.URL = "" },
		"auth.jwt_secret":         func(c *Config) { c.Auth.JWTSecret = "short" },
		"auth.jwt_algorithm":      func(c *Config) { c.Auth.JWTAlgorithm = "none" },
		"replication.slot":        func(c *Config) { c.Replication.Slot = "Bad-Slot" },
		"replication.publication": func(c *Config) { c.Replication.Publication = "x'; DROP" },
		"hub.queue_size":          func(c *Config) { c.Hub.QueueSize = 0 },
		"websocket.read_limit":    func(c *Config) { c.WS.ReadLimit = 10 },
		"websocket.ping_interval": func(c *Config) { c.WS.PingInterval = time.Millisecond },
		"events.tables":           func(c *Config) { c.Events.Tables = c.Events.Tables[:4] }, // no membership table
		"log.level":               func(c *Config) { c.Log.Level = "loud" },
		"events.bulk_threshold":   func(c *Config) { c.Events.BulkThreshold = -1 },
		"websocket.write_workers": func(c *Config) { c.WS.WriteWorkers = -1 },
	}
	for setting, mutate := range cases {
		t.Run(setting, func(t *testing.T) {
			cfg := Default()
			cfg.Database.URL, cfg.Auth.JWTSecret = "postgres://x", "0123456789abcdef"
			mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), setting) {
				t.Fatalf("err = %v, want it to name %s", err, setting)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("../../config/walcast.yaml")
	f.Add(data)
	f.Add([]byte("hub: {queue_size: -1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := Default()
		if Parse(b, &cfg) == nil {
			_ = cfg.Validate()
		}
	})
}

// TestBooleanEnvironmentValues: the usual spellings, and an error for
// anything else (never a silent false).
func TestBooleanEnvironmentValues(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
		ok   bool
	}{
		{"1", true, true}, {"true", true, true}, {"TRUE", true, true}, {"yes", true, true}, {"on", true, true},
		{"0", false, true}, {"false", false, true}, {"no", false, true}, {"off", false, true},
		{"enabled", false, false}, {"2", false, false}, {"y", false, false},
	} {
		cfg := Default()
		cfg.Demo.Enabled = !c.want
		err := applyEnv(&cfg, func(k string) string {
			if k == "WALCAST_DEMO" {
				return c.v
			}
			return ""
		})
		switch {
		case c.ok && (err != nil || cfg.Demo.Enabled != c.want):
			t.Errorf("WALCAST_DEMO=%s: enabled %v, err %v", c.v, cfg.Demo.Enabled, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "WALCAST_DEMO")):
			t.Errorf("WALCAST_DEMO=%s accepted (err %v)", c.v, err)
		}
	}
}
