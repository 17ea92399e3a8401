"""Planning: turn a user's request into validated jobs, before anything runs or is queued.

Everything the user can get wrong (model, layer, filter range, class, files) is checked here and
refused with the valid choices listed, so a bad request never reaches a queue.

* :mod:`.plan` — ``Plan`` (its jobs, inputs and refused files, in manifest shards), ``PlanError``
  and the run id (``RunHash``);
* :mod:`.validate` — the request's model, layers, filters, class and precision;
* :mod:`.inputs` — the photos of files and folders, with their sha256;
* one planner per kind: :mod:`.grids`, :mod:`.heatmaps`, :mod:`.examples`;
* :mod:`.spool` — a heatmaps plan of any size, kept in a spool file for a fleet submission.
"""
