-- Demo data for `make run`: alice and bob share "Demo project"; mallory is
-- not a member. Fixed ids, so the tokens printed by `make run` always fit.
INSERT INTO users (id, email, display_name) VALUES
    ('11111111-1111-4111-8111-111111111111', 'alice@example.com', 'Alice'),
    ('22222222-2222-4222-8222-222222222222', 'bob@example.com', 'Bob'),
    ('33333333-3333-4333-8333-333333333333', 'mallory@example.com', 'Mallory')
ON CONFLICT (id) DO NOTHING;

INSERT INTO projects (id, name, owner_id) VALUES
    ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'Demo project', '11111111-1111-4111-8111-111111111111')
ON CONFLICT (id) DO NOTHING;

INSERT INTO project_members (project_id, user_id, role) VALUES
    ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '11111111-1111-4111-8111-111111111111', 'owner'),
    ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '22222222-2222-4222-8222-222222222222', 'member')
ON CONFLICT (project_id, user_id) DO NOTHING;

INSERT INTO sprints (id, project_id, name, status, start_date, end_date) VALUES
    ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'Sprint 1', 'active', current_date, current_date + 14)
ON CONFLICT (id) DO NOTHING;

INSERT INTO tasks (id, project_id, sprint_id, title, status, assignee_id, story_points) VALUES
    ('cccccccc-cccc-4ccc-8ccc-cccccccccccc', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'Ship walcast', 'in_progress', '11111111-1111-4111-8111-111111111111', 5)
ON CONFLICT (id) DO NOTHING;

-- A board and a chat that are not empty on first look.
INSERT INTO tasks (id, project_id, sprint_id, title, status, assignee_id, story_points) VALUES
    ('cccccccc-cccc-4ccc-8ccc-ccccccccccc1', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'Write the migration guide', 'todo', '22222222-2222-4222-8222-222222222222', 3),
    ('cccccccc-cccc-4ccc-8ccc-ccccccccccc2', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'Load test 10,000 sockets', 'todo', NULL, 8),
    ('cccccccc-cccc-4ccc-8ccc-ccccccccccc3', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'Replace the old broadcast hub', 'done', '11111111-1111-4111-8111-111111111111', 2)
ON CONFLICT (id) DO NOTHING;

INSERT INTO messages (id, project_id, sender_id, content) VALUES
    ('dddddddd-dddd-4ddd-8ddd-ddddddddddd1', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '11111111-1111-4111-8111-111111111111', 'Welcome to the demo project!'),
    ('dddddddd-dddd-4ddd-8ddd-ddddddddddd2', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '22222222-2222-4222-8222-222222222222', 'Open this page as Alice in one window and as Bob in another.')
ON CONFLICT (id) DO NOTHING;
