"""PtychoNet: the per-pattern network (`network`), the stitching layer (`layers`), the losses (`losses`), SavedModel export (`export`) and loading (`inference`)."""
