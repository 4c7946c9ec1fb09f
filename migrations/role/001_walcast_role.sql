-- Least privilege for walcast (walcast migrate --with-role, run by an admin):
-- a login role with REPLICATION (to create and stream its slot), SELECT on
-- the five watched tables (membership checks, REST reads, pgoutput) and
-- INSERT on messages (POST /api/v1/projects/{id}/messages), nothing else.
-- It cannot create the publication, so `walcast migrate` (as the admin)
-- creates it. Set a password afterwards:
--   ALTER ROLE walcast PASSWORD '…';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walcast') THEN
        CREATE ROLE walcast LOGIN REPLICATION;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO walcast;
GRANT SELECT ON projects, sprints, tasks, messages, project_members TO walcast;
GRANT INSERT ON messages TO walcast;
