"""Staging: a job's inputs from the file exchange (or the web) into its work directory, and
its outputs back into the exchange. One module per concern:

* `planning` (pure): a remote name for every input and where each reference now points;
  `Plan.apply` rewrites the input object or workflow accordingly;
* `inbound`: `stage_in` carries the plan out, from `local` files (confined to the
  exchange) and the web (`cerise.remote.web`, behind its fence), with ONE `prepare`
  command, the `upload` pipeline and the input `cache` of the compute resource, whose
  `hashes` of local files are remembered;
* `outbound`: `stage_out` lists the work directory (`listing`), decides what to publish
  (`outputs`) and copies it (`fetch_back`);
* `progress`: bytes done of the total, each way, for a caller's callback;
* `rejections`: `InputRejected` (the user's inputs: a PermanentFailure) and
  `OutputRejected` (the runner's outputs: a SystemError).

Limits: a Directory must come from the exchange (http has no listing); symbolic links to
directories inside an input directory are refused; the output object is read whole, up
to `MAX_OUTPUT_OBJECT` bytes. The remote scripts need bash 4 and GNU coreutils and
findutils, as on any Linux cluster. Remote names are assumed to be valid UTF-8.
"""

from cerise.remote.staging.cache import InputCache
from cerise.remote.staging.concurrency import PARALLEL_FILES
from cerise.remote.staging.inbound import StageInReport, stage_in
from cerise.remote.staging.listing import Entry, WorkListing, listing_script, parse_listing
from cerise.remote.staging.outbound import MAX_OUTPUT_OBJECT, stage_out
from cerise.remote.staging.outputs import Copy, OutputPlan, plan_outputs
from cerise.remote.staging.planning import Placement, Plan, Transfer, plan
from cerise.remote.staging.prepare import parse_checksums, prepare_script
from cerise.remote.staging.progress import StagingProgress
from cerise.remote.staging.rejections import InputRejected, OutputRejected

__all__ = [
    "MAX_OUTPUT_OBJECT",
    "PARALLEL_FILES",
    "Copy",
    "Entry",
    "InputCache",
    "InputRejected",
    "OutputPlan",
    "OutputRejected",
    "Placement",
    "Plan",
    "StageInReport",
    "StagingProgress",
    "Transfer",
    "WorkListing",
    "listing_script",
    "parse_checksums",
    "parse_listing",
    "plan",
    "plan_outputs",
    "prepare_script",
    "stage_in",
    "stage_out",
]
