package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a PostgreSQL server of a test's own, for tests that stop and
// start the server (the shared one serves every other test). It uses the
// system's binaries and runs as the postgres user when the test runs as
// root, since initdb and postgres refuse root.
type Cluster struct {
	bin  string
	dir  string
	Port int
	// URL is the superuser URL of the postgres database.
	URL string
}

// NewCluster initializes and starts a cluster with wal_level=logical; it is
// stopped and removed when the test ends. Extra postgresql.conf lines come
// after the defaults and so override them (e.g. "wal_level = replica").
func NewCluster(t testing.TB, conf ...string) *Cluster {
	t.Helper()
	c, err := startCluster(conf...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.remove)
	return c
}

// startCluster initializes and starts a cluster; remove stops it and
// deletes its files.
func startCluster(conf ...string) (*Cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, errors.New("pgtest: no PostgreSQL server binaries under /usr/lib/postgresql: install Debian's postgresql package")
	}
	sort.Strings(bins)
	dir, err := os.MkdirTemp("", "walcast-cluster-")
	if err != nil {
		return nil, err
	}
	port, err := freePortNumber()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, Port: port}
	for _, line := range conf {
		// A "port = N" line chooses the port (a cluster taking another's
		// place at the same address).
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "port" {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				c.Port = n
			}
		}
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := c.output("initdb", "--pgdata", c.data(), "--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync"); err != nil {
		c.remove()
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	settings := fmt.Sprintf("\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nwal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\nfsync = off\n", c.Port, dir)
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.remove()
		return nil, err
	}
	_, _ = f.WriteString(settings)
	for _, line := range conf {
		_, _ = f.WriteString(line + "\n")
	}
	f.Close()
	if err := c.Start(); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// remove stops the server at once and deletes its files.
func (c *Cluster) remove() {
	_ = c.run("pg_ctl", "--pgdata", c.data(), "--mode=immediate", "--wait", "stop")
	_ = os.RemoveAll(c.dir)
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	if os.Getuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (c *Cluster) run(name string, args ...string) error {
	_, err := c.output(name, args...)
	return err
}

func (c *Cluster) output(name string, args ...string) ([]byte, error) {
	return c.command(name, args...).CombinedOutput()
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	out, err := c.output("pg_ctl", "--pgdata", c.data(), "--log", filepath.Join(c.dir, "log"), "--wait", "--timeout=30", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

// Snapshot copies the data directory of the stopped server aside, as a
// disk or VM snapshot would; Restore puts the copy back.
func (c *Cluster) Snapshot() error {
	return c.copyData(c.data(), c.data()+".snapshot")
}

// Restore replaces the stopped server's data directory with its Snapshot.
func (c *Cluster) Restore() error {
	if err := os.RemoveAll(c.data()); err != nil {
		return err
	}
	return c.copyData(c.data()+".snapshot", c.data())
}

func (c *Cluster) copyData(from, to string) error {
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %v\n%s", from, err, out)
	}
	return nil
}

// StopFast runs pg_ctl stop -m fast with the given timeout and returns how
// long it took.
func (c *Cluster) StopFast(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	out, err := c.output("pg_ctl", "--pgdata", c.data(), "--mode=fast", "--wait", "--timeout="+strconv.Itoa(int(timeout.Seconds())), "stop")
	if err != nil {
		return time.Since(start), fmt.Errorf("pg_ctl stop -m fast: %v\n%s", err, out)
	}
	return time.Since(start), nil
}

func freePortNumber() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Connect opens a connection to the cluster's postgres database as the
// superuser.
func (c *Cluster) Connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.URL)
}
