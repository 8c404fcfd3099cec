-- Finished jobs moved out of the Kubernetes API. `body` is the WorkflowJob as it was when
-- archived (metadata without managedFields, spec, final status), so every door can show
-- it as it showed the live object; the other columns are what is searched and ordered by.
CREATE TABLE archived_jobs (
    uid         text PRIMARY KEY,
    namespace   text NOT NULL,
    name        text NOT NULL,
    resource    text NOT NULL,
    phase       text NOT NULL,
    created     text NOT NULL,          -- metadata.creationTimestamp, as the live order uses it
    finished_at timestamptz,
    archived_at timestamptz NOT NULL DEFAULT now(),
    log_url     text NOT NULL,
    body        jsonb NOT NULL
);
CREATE INDEX archived_jobs_order ON archived_jobs (namespace, created, name);
CREATE INDEX archived_jobs_name ON archived_jobs (namespace, name);
CREATE INDEX archived_jobs_retention ON archived_jobs (namespace, resource, finished_at);
