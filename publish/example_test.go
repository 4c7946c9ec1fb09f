package publish_test

import (
	"context"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/publish"
)

// startSprint is an API handler's work: the sprint's row and the event
// that announces it commit together, or neither does. The project's
// members receive the sprint_updated row event and then sprint_started,
// in that order, at positions a reconnecting client resumes from.
func startSprint(ctx context.Context, pool *pgxpool.Pool, projectID, sprintID string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE sprints SET status = 'active' WHERE id = $1`, sprintID); err != nil {
			return err
		}
		return publish.Send(ctx, tx, projectID, "sprint_started", map[string]any{"sprint_id": sprintID})
	})
}

func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := startSprint(ctx, pool, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "cccccccc-cccc-4ccc-8ccc-cccccccccccc"); err != nil {
		log.Fatal(err)
	}
	// Outside a transaction, on the pool: an event of its own.
	if err := publish.Send(ctx, pool, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "deploy_finished", nil); err != nil {
		log.Fatal(err)
	}
}
