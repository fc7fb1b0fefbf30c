"""The gRPC API: the service, the conversions to and from the wire messages, the connections
(TLS, HTTP/2 limits), the audit log and the metrics endpoint. The only package that imports
grpclib, h2 or protobuf (tests/unit/test_layering.py)."""
