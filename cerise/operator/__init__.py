"""The kopf operator: carries WorkflowJobs through their life on ComputeResources.

Thin kopf handlers (`handlers`) feed a job cache (`registry`); one worker per
ComputeResource (`worker`) drives that resource's jobs: validation, staging, submission,
one batched poll per refresh, cancellation, destaging.
"""
