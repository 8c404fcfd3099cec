"""Pilot mode on the compute resource: many runs packed into a few batch allocations.

A run in pilot mode is an ordinary job directory with its ordinary job script
(`cerise.remote.jobscript`); only its submission differs. Instead of `sbatch`, the run is
handed over as a *ticket* into a queue on the resource's file system, and *allocations* —
ordinary batch jobs whose job script runs a small bash agent — take tickets from that
queue and run the job scripts side by side within their cores. Nothing listens on a port:
the operator and the agents only rename files.

Layout under `<base>/pilot/` (see `layout.PilotLayout`)::

    queue/<order>.<run>    waiting tickets, oldest first; `.<run>` while one is written
    claimed/<alloc>/<run>  tickets an allocation's agent took (rename: only one agent wins)
    done/<run>             tickets of runs that ended in an allocation (+ an `ended=` line)
    cancelled/<run>        tickets taken out of the queue by a cancel, never started
    cancel/<run>           a request to the agent running <run> to stop it
    allocations/<alloc>/   the allocation's job directory (`JobFiles`): job.sh, started,
                           exit_code, stderr.txt (the agent's log), remote_id, and
                           agent.sh, agent (start, deadline, cores, host, pid),
                           heartbeat (time, cores in use, runs), ended (idle|terminated …)

The modules, one concern each: `layout` (paths and names), `tickets` (a ticket's text),
`queue` (the runs' side as a scheduler plug-in: hand-over, where tickets are, cancel),
`agent` (the agent script and the allocation's request), `status` (the one status command
for allocations and runs), `requeue` (a run of a gone allocation back into the queue) and
`executor` (running all of them over a connection).
"""
