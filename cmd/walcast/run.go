package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/config"
	"github.com/walcast/walcast/internal/migrate"
	"github.com/walcast/walcast/internal/wal"
	"github.com/walcast/walcast/migrations"
)

const usage = `usage: walcast [serve] [--config PATH] [--http-addr ADDR] [--log-level LEVEL]
       walcast migrate [--with-notify-triggers] [--with-role] [--config PATH]
       walcast token --user UUID [--ttl 1h] [--config PATH]
       walcast check [--config PATH]
       walcast version
       walcast help

commands:
  serve     stream the database's changes to WebSocket clients (the default)
  migrate   apply the schema migrations; --with-role creates the least-privilege
            walcast role, --with-notify-triggers the legacy NOTIFY triggers
  token     print a JWT for a user (development and tests)
  check     report everything that would stop or weaken a start on the
            configured database (settings, role, tables, replica identities,
            publication, slot), each with its fix; creates nothing
  version   print the version and build information

flags (every command):
  --config PATH       YAML settings (default config/walcast.yaml when present)
  --http-addr ADDR    overrides http.addr
  --log-level LEVEL   debug, info, warn or error`

// help is the usage with the environment variables that override settings.
func help() string {
	return usage + "\n\nenvironment (overrides the file; see config/walcast.yaml):\n  " + strings.Join(config.EnvNames(), "\n  ")
}

// version prints the module version and the build's VCS information.
func version(stdout io.Writer) error {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(stdout, "walcast (no build information)")
		return nil
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(stdout, "walcast %s\n  commit %s%s\n  built %s\n  %s %s/%s\n", bi.Main.Version,
		orUnknown(settings["vcs.revision"]), map[string]string{"true": " (modified)"}[settings["vcs.modified"]],
		orUnknown(settings["vcs.time"]), bi.GoVersion, settings["GOOS"], settings["GOARCH"])
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// run is the whole program; main only calls it. args excludes the program
// name; getenv replaces os.Getenv so tests can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			cmd = "help"
		}
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, getenv, stdout, stderr)
	case "migrate":
		err = migrateCmd(ctx, args, getenv, stdout, stderr)
	case "token":
		err = tokenCmd(args, getenv, stdout, stderr)
	case "check":
		err = checkCmd(ctx, args, getenv, stdout, stderr)
	case "version":
		return version(stdout)
	case "help":
		fmt.Fprintln(stdout, help())
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, help())
		return nil
	}
	return err
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// splitFlags separates a subcommand's own flags from the shared config
// flags, so both can be given in any order.
func splitFlags(args []string, own map[string]bool) (mine, shared []string) {
	for i := 0; i < len(args); i++ {
		name := strings.TrimLeft(args[i], "-")
		name, _, hasValue := strings.Cut(name, "=")
		target := &shared
		if own[name] {
			target = &mine
		}
		*target = append(*target, args[i])
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && !isBoolFlag(name) {
			*target = append(*target, args[i+1])
			i++
		}
	}
	return mine, shared
}

func isBoolFlag(name string) bool { return name == "with-notify-triggers" || name == "with-role" }

func migrateCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	mine, shared := splitFlags(args, map[string]bool{"with-notify-triggers": true, "with-role": true})
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	withNotify := fs.Bool("with-notify-triggers", false, "also install the legacy pg_notify triggers")
	withRole := fs.Bool("with-role", false, "also create the least-privilege walcast role and its grants")
	if err := fs.Parse(mine); err != nil {
		return err
	}
	cfg, _, err := config.Load(shared, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.Database.URL == "" {
		return errors.New("config: database.url (WALCAST_DATABASE_URL) is required")
	}
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sets := []migrate.Set{{Name: "schema", FS: migrations.Schema, Dir: "."}}
	if *withNotify {
		sets = append(sets, migrate.Set{Name: "notify", FS: migrations.Notify, Dir: "notify"})
	}
	if *withRole {
		sets = append(sets, migrate.Set{Name: "role", FS: migrations.Role, Dir: "role"})
	}
	applied, err := migrate.Apply(ctx, conn, sets...)
	for _, name := range applied {
		fmt.Fprintln(stdout, "applied", name)
	}
	if err != nil {
		return err
	}
	pool, err := newPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := wal.EnsurePublication(ctx, pool, cfg.Replication.Publication, cfg.Events.Tables); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "publication", cfg.Replication.Publication, "ready")
	return nil
}

func tokenCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	mine, shared := splitFlags(args, map[string]bool{"user": true, "ttl": true})
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "the user's UUID (the token's sub)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(mine); err != nil {
		return err
	}
	if !auth.IsUUID(*user) {
		return errors.New("token: --user must be a UUID")
	}
	if *ttl <= 0 {
		return errors.New("token: --ttl must be positive")
	}
	cfg, _, err := config.Load(shared, getenv, stderr)
	if err != nil {
		return err
	}
	if len(cfg.Auth.JWTSecret) < 16 {
		return errors.New("config: auth.jwt_secret (WALCAST_JWT_SECRET) must be set, at least 16 bytes")
	}
	tok, err := auth.Issue([]byte(cfg.Auth.JWTSecret), cfg.Auth.JWTAlgorithm, strings.ToLower(*user), *ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// checkCmd is walcast check: with the configured settings, it reports
// everything that would stop or weaken a start, each with its fix, and
// creates nothing. It fails when anything would stop walcast.
func checkCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, rest, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("check: unexpected argument %q", rest[0])
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Source != "wal" {
		fmt.Fprintln(stdout, "source: notify: nothing of logical replication to check")
		return nil
	}
	pool, err := newPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	findings, err := wal.Doctor(ctx, pool, cfg.Replication.Publication, cfg.Replication.Slot, cfg.Events.Tables)
	if err != nil {
		return err
	}
	errs := 0
	for _, f := range findings {
		fmt.Fprintln(stdout, f.String())
		if f.Error {
			errs++
		}
	}
	if errs > 0 {
		return fmt.Errorf("check: %d problem(s) stop walcast on this database", errs)
	}
	fmt.Fprintln(stdout, "ok: walcast can start on this database")
	return nil
}
