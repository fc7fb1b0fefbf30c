"""jobctl: the terminal client of jobd, and a small async client library (:mod:`jobctl.client`)."""
