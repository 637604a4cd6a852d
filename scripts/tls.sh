#!/usr/bin/env bash
# Test TLS material, made with the JDK's keytool (no other tool needed):
#
#   scripts/tls.sh DIR    writes, once per DIR:
#     ca.pem          a test CA (30 days) that signs the servers' certificate
#     server.p12      the servers' key and certificate chain (127.0.0.1 and localhost),
#                     PKCS12 with password "stockflow-test" (Cassandra and Kafka read it)
#     other-ca.pem    an unrelated CA, for tests that a wrong CA is refused
#
# Nothing here is a secret worth keeping: it lives in a temporary directory and only
# protects servers on 127.0.0.1 for one test run.
set -euo pipefail

DIR="${1:?usage: $0 DIR}"
PASSWORD=stockflow-test

# shellcheck source=scripts/jvm.sh
source "$(dirname "$0")/jvm.sh"

[[ -f "$DIR/.complete" ]] && exit 0
java="$(find_java17 tls.sh "${TLS_JAVA:-}")"
keytool="$(dirname "$java")/keytool"
[[ -x "$keytool" ]] || { echo "tls.sh: no keytool beside $java" >&2; exit 1; }
rm -rf "$DIR"
mkdir -p "$DIR"
kt() { "$keytool" "$@" -storepass "$PASSWORD" 2>>"$DIR/keytool.log"; }

ca() { # $1 name, $2 CN
    kt -genkeypair -alias "$1" -keyalg EC -groupname secp256r1 -dname "CN=$2" \
        -ext bc:c -validity 30 -keystore "$DIR/$1.p12" -storetype PKCS12
    kt -exportcert -rfc -alias "$1" -keystore "$DIR/$1.p12" > "$DIR/$1.pem"
}

ca ca "stockflow test CA"
ca other-ca "an unrelated CA"
kt -genkeypair -alias server -keyalg EC -groupname secp256r1 -dname "CN=localhost" \
    -validity 30 -keystore "$DIR/server.p12" -storetype PKCS12
kt -certreq -alias server -keystore "$DIR/server.p12" > "$DIR/server.csr"
kt -gencert -alias ca -keystore "$DIR/ca.p12" -infile "$DIR/server.csr" -rfc -validity 30 \
    -ext SAN=ip:127.0.0.1,dns:localhost -ext EKU=serverAuth -ext KU=digitalSignature \
    > "$DIR/server.pem"
kt -importcert -noprompt -alias ca -file "$DIR/ca.pem" -keystore "$DIR/server.p12"
kt -importcert -noprompt -alias server -file "$DIR/server.pem" -keystore "$DIR/server.p12"
rm -f "$DIR/ca.p12" "$DIR/other-ca.p12" "$DIR/server.csr"
touch "$DIR/.complete"
echo "tls.sh: test CA and server certificate in $DIR" >&2
