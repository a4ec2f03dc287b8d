-- Roles of API keys (issue 12 item 4): the seeds' viewer (read-only, no customer
-- identifiers) and support (one invoice at a time, no bulk lists) join analyst, operator
-- and admin.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('viewer', 'support', 'analyst', 'operator', 'admin'));
