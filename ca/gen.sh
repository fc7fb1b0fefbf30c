#!/bin/sh
# Make the certificates jobd and jobctl use for mutual TLS 1.3.
#
#   sh ca/gen.sh [OUTDIR]                 a CA, server.pem, client_0.pem, client_1.pem
#   sh ca/gen.sh --client NAME [OUTDIR]   one more client certificate NAME.pem from the
#                                         existing CA
#   sh ca/gen.sh --revoke NAME [OUTDIR]   revoke NAME.pem and write the CRL, ca.crl (give it
#                                         to jobd with --crl; SIGHUP reloads it)
#
# OUTDIR defaults to the directory this script is in, whatever the caller's cwd.
# Existing files are never overwritten: an existing CA is reused and existing leaf files are
# kept (delete a file and re-run to re-issue it). Keys are ECDSA P-256, signatures SHA-256,
# serials random; the CA lives 10 years, leaf certificates 1 year. Needs only `openssl`.
set -eu

prog=gen.sh
ca_days=3650
leaf_days=365

die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    printf 'usage: sh %s [OUTDIR]\n       sh %s --client NAME [OUTDIR]\n' "$0" "$0"
    printf '       sh %s --revoke NAME [OUTDIR]\n' "$0"
}

mode=standard
client=
case ${1-} in
    -h | --help)
        usage
        exit 0
        ;;
    --client | --revoke)
        [ $# -ge 2 ] || die "$1 needs a NAME"
        mode=${1#--}
        client=$2
        shift 2
        ;;
    -*)
        usage >&2
        die "unknown option $1"
        ;;
esac
[ $# -le 1 ] || {
    usage >&2
    die "too many arguments"
}

if [ "$mode" != standard ]; then
    # NAME becomes both a file name and the CN (the identity jobd authorizes), so keep it to a
    # charset that cannot escape OUTDIR or inject extra subject attributes via -subj's '/'.
    case $client in
        '' | [.-]* | *[!A-Za-z0-9._-]*)
            die "client NAME must be letters, digits, '.', '_' or '-', not starting with '.' or '-': '$client'"
            ;;
        ca | server)
            die "client NAME '$client' would clash with the CA or server files"
            ;;
    esac
    [ ${#client} -le 64 ] || die "client NAME is longer than 64 characters (the CN limit)"
fi

command -v openssl >/dev/null 2>&1 ||
    die "the 'openssl' command was not found in PATH; install OpenSSL 3 (e.g. apt-get install openssl)"

if [ $# -eq 1 ]; then
    outdir=$1
else
    outdir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
fi
if [ "$mode" != standard ]; then
    [ -d "$outdir" ] || die "no such directory: $outdir"
else
    mkdir -p -- "$outdir"
fi
outdir=$(CDPATH='' cd -- "$outdir" && pwd)

# Everything this script creates holds or sits next to private keys.
umask 077

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jobd-ca.XXXXXX")
cleanup() {
    status=$?
    rm -rf -- "$tmp"
    rm -f -- "$outdir"/.*."$$"
    if [ "$status" -ne 0 ]; then
        printf '%s: failed; no file that already existed in %s was changed\n' "$prog" "$outdir" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap removes the temporary directory.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

say() {
    printf '%s: %-6s %s\n' "$prog" "$1" "$2"
}

# Publish a finished file under its final name. `ln` refuses to replace an existing file, so a
# file appearing meanwhile is never clobbered, and a half-written file is never published.
publish() {
    cp -p -- "$1" "$outdir/.$2.$$"
    if ! ln -- "$outdir/.$2.$$" "$outdir/$2" 2>/dev/null; then
        rm -f -- "$outdir/.$2.$$"
        die "could not create $outdir/$2 (does it exist now?)"
    fi
    rm -f -- "$outdir/.$2.$$"
}

serial() {
    # 128 random bits: unique serials without a serial file to keep in sync.
    printf '0x%s' "$(openssl rand -hex 16)"
}

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ||
        die "openssl genpkey failed to create an EC P-256 key"
}

ca_key=$outdir/ca.key
ca_crt=$outdir/ca.crt

make_ca() {
    cat >"$tmp/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = jobd CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    new_key "$tmp/ca.key"
    openssl req -new -x509 -config "$tmp/ca.cnf" -extensions v3_ca -key "$tmp/ca.key" \
        -sha256 -days "$ca_days" -set_serial "$(serial)" -out "$tmp/ca.crt"
    # The CA certificate is public and every jobctl user needs to read it.
    chmod 644 "$tmp/ca.crt"
    publish "$tmp/ca.key" ca.key
    say wrote "$ca_key  CA private key (ECDSA P-256, mode 0600)"
    publish "$tmp/ca.crt" ca.crt
    say wrote "$ca_crt  CA certificate, CN=jobd CA, $ca_days days"
}

check_ca() {
    # A CA certificate whose key is gone (or vice versa) cannot issue anything that verifies.
    a=$(openssl x509 -in "$ca_crt" -noout -pubkey) || die "cannot read $ca_crt"
    b=$(openssl pkey -in "$ca_key" -pubout) || die "cannot read $ca_key"
    [ "$a" = "$b" ] || die "$ca_key does not belong to $ca_crt"
    say kept "$ca_key"
    say kept "$ca_crt"
}

# make_leaf NAME CN server|client
make_leaf() {
    name=$1
    cn=$2
    kind=$3
    pem=$outdir/$name.pem
    if [ -e "$pem" ]; then
        # A kept file from another CA, or one past its end date, would fail at handshake time.
        openssl verify -purpose "ssl$kind" -CAfile "$ca_crt" "$pem" >/dev/null 2>&1 ||
            die "$pem exists but does not verify against $ca_crt as an ssl$kind certificate; delete it and re-run"
        say kept "$pem"
        return 0
    fi
    if [ "$kind" = server ]; then
        eku=serverAuth
        san='subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1'
    else
        eku=clientAuth
        san=
    fi
    cat >"$tmp/$name.cnf" <<EOF
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
$san
EOF
    new_key "$tmp/$name.key"
    openssl req -new -key "$tmp/$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr"
    openssl x509 -req -in "$tmp/$name.csr" -CA "$ca_crt" -CAkey "$ca_key" \
        -set_serial "$(serial)" -sha256 -days "$leaf_days" \
        -extfile "$tmp/$name.cnf" -extensions leaf -out "$tmp/$name.crt" 2>/dev/null ||
        die "openssl x509 failed to sign $name"
    cat "$tmp/$name.crt" "$tmp/$name.key" >"$tmp/$name.pem"
    openssl verify -purpose "ssl$kind" -CAfile "$ca_crt" "$tmp/$name.pem" >/dev/null ||
        die "the new $name certificate does not verify against $ca_crt"
    publish "$tmp/$name.pem" "$name.pem"
    say wrote "$pem  $kind certificate + key, CN=$cn, EKU $eku, $leaf_days days"
}

# Revocation keeps openssl ca's small database next to the CA: ca.index (what was revoked)
# and ca.crlnumber; every CRL lists all revocations so far and is valid for 30 days (re-run
# --revoke on any revoked NAME to refresh it).
revoke() {
    pem="$outdir/$1.pem"
    [ -e "$pem" ] || die "no certificate $pem to revoke"
    openssl verify -CAfile "$ca_crt" "$pem" >/dev/null 2>&1 ||
        die "$pem was not issued by $ca_crt"
    [ -e "$outdir/ca.index" ] || : >"$outdir/ca.index"
    [ -e "$outdir/ca.crlnumber" ] || echo 01 >"$outdir/ca.crlnumber"
    cat >"$tmp/ca.cnf" <<CNF
[ca]
default_ca = jobd_ca
[jobd_ca]
database = $outdir/ca.index
crlnumber = $outdir/ca.crlnumber
certificate = $ca_crt
private_key = $ca_key
default_md = sha256
default_crl_days = 30
unique_subject = no
CNF
    serial=$(openssl x509 -in "$pem" -noout -serial | cut -d= -f2)
    if grep -q "^R.*	$serial	" "$outdir/ca.index"; then
        say kept "$1 was revoked already (serial $serial)"
    else
        openssl ca -batch -config "$tmp/ca.cnf" -revoke "$pem" >/dev/null 2>&1 ||
            die "openssl could not revoke $pem"
        say wrote "$outdir/ca.index  $1 revoked (serial $serial)"
    fi
    # A daemon holds every CRL it loaded and uses the one with the latest lastUpdate; of two
    # made in one second it keeps the older. So a new CRL must not share the old one's second.
    if [ -e "$outdir/ca.crl" ] && [ "$(date +%s)" -le "$(stat -c %Y "$outdir/ca.crl")" ]; then
        sleep 1
    fi
    openssl ca -batch -config "$tmp/ca.cnf" -gencrl -out "$tmp/ca.crl" >/dev/null 2>&1 ||
        die "openssl could not write the CRL"
    chmod 644 "$tmp/ca.crl"
    mv -f -- "$tmp/ca.crl" "$outdir/ca.crl"
    say wrote "$outdir/ca.crl  CRL of every revoked certificate, 30 days"
}

if [ -e "$ca_key" ] && [ -e "$ca_crt" ]; then
    check_ca
elif [ -e "$ca_key" ] || [ -e "$ca_crt" ]; then
    die "only one of $ca_key and $ca_crt exists; restore the other, or delete it to start a new CA"
elif [ "$mode" != standard ]; then
    die "no CA in $outdir; run 'sh $0 $outdir' first"
else
    # Leaf files from a lost CA would be kept and then fail every handshake: refuse instead.
    for f in server client_0 client_1; do
        [ ! -e "$outdir/$f.pem" ] ||
            die "$outdir/$f.pem exists but the CA that issued it is gone; delete it and re-run"
    done
    make_ca
fi

if [ "$mode" = revoke ]; then
    revoke "$client"
elif [ "$mode" = client ]; then
    make_leaf "$client" "$client" client
else
    make_leaf server localhost server
    make_leaf client_0 client_0 client
    make_leaf client_1 client_1 client
fi
