"""Analysis of gradvar records: load runs (`load`), instability metrics (`metrics`), the signals and targets of
a run (`signals`), correlations (`correlate`), the early-warning rule (`warning`), every signal ranked
(`ranking`), gradient variance by sequence length (`seqlen`) and methods compared (`compare`)."""
