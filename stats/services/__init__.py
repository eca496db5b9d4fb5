"""Functions that change statistics, by sub-domain: rollups (kept with the messages),
reconcile (repair from a recount) and publish (the blob in S3). Import from the submodules."""
