-- The app's reference schema: what `make run` and the tests use. walcast
-- itself needs only the five watched tables (and users for the demo).

CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text UNIQUE NOT NULL,
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    owner_id   uuid NOT NULL REFERENCES users,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_members (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, user_id)
);

CREATE TABLE sprints (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    name       text NOT NULL,
    status     text NOT NULL DEFAULT 'planned',
    start_date date,
    end_date   date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sprints_project_id ON sprints (project_id);

CREATE TABLE tasks (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    sprint_id    uuid REFERENCES sprints ON DELETE SET NULL,
    title        text NOT NULL,
    description  text,
    status       text NOT NULL DEFAULT 'todo',
    assignee_id  uuid REFERENCES users,
    story_points integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_project_id ON tasks (project_id);

CREATE TABLE messages (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    sender_id    uuid NOT NULL REFERENCES users,
    content      text NOT NULL,
    message_type text NOT NULL DEFAULT 'text',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Keyset pagination of GET /api/v1/projects/{id}/messages.
CREATE INDEX messages_project_created ON messages (project_id, created_at DESC, id DESC);

-- Replica identity: FULL on all five tables, rather than a unique index on
-- (id, project_id). A DELETE then carries the whole old row, so
-- task_deleted, sprint_deleted and member_removed events describe what was
-- deleted (not just its keys), and an UPDATE that leaves a large TOASTed
-- column unchanged still sends its value, taken from the old row. The cost
-- is WAL volume on UPDATE and DELETE only; INSERT, the bulk of this app's
-- writes (chat messages), is unaffected.
ALTER TABLE projects        REPLICA IDENTITY FULL;
ALTER TABLE project_members REPLICA IDENTITY FULL;
ALTER TABLE sprints         REPLICA IDENTITY FULL;
ALTER TABLE tasks           REPLICA IDENTITY FULL;
ALTER TABLE messages        REPLICA IDENTITY FULL;
