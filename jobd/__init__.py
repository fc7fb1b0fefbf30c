"""jobd: a job worker service that runs Linux processes for clients authenticated by mutual TLS."""
