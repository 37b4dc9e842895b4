"""The generator (paper section 3.5, Appendix B): the seeded corpus sample, the Appendix B picks of
extra label docs, and the annotation of every plan sub-task on them. No Dagster."""
