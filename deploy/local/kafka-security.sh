# shellcheck shell=bash
# The secured broker of deploy/local/kafka.sh (MR_KAFKA_SECURE=1), sourced by it; not run on its own.
#
# Listeners: SASL_PLAINTEXT (SCRAM-SHA-512, local development and the inter-broker traffic),
# SASL_SSL (SCRAM-SHA-512 over TLS with a CA made here), CONTROLLER (SASL PLAIN, static: SCRAM
# credentials live in the metadata log the controller serves, so it cannot use them itself).
# Authorisation: the standard KRaft authorizer, deny by default, `admin` the only super user.
#
# State (beside the broker's): tls/ (ca.crt for the clients, the broker's PKCS#12 keystore),
# users/<name> (one password per file, mode 0600: admin, the services' and the departments' users).
# After the broker answers, `mention-router kafka users apply` creates the SCRAM users and
# `mention-router kafka acls --apply` their ACLs, from the model in shared/kafkaacl.py.

TLS_DIR=$STATE_DIR/tls
USERS_DIR=$STATE_DIR/users
ADMIN_USER=admin
PROVISIONED=$STATE_DIR/.provisioned

random_password() {
    head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32
}

admin_password() {
    cat "$USERS_DIR/$ADMIN_USER"
}

# A CA and the broker's certificate (for 127.0.0.1 and localhost), made once.
make_tls() {
    [[ -s $TLS_DIR/server.p12 ]] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the secured broker's certificates"
    local tmp=$TLS_DIR.tmp.$$
    rm -rf "$tmp" && mkdir -p "$tmp"
    (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mention-router local CA" \
            -keyout ca.key -out ca.crt
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt
        random_password >keystore.password
        openssl pkcs12 -export -in server.crt -inkey server.key -certfile ca.crt -name broker \
            -passout "file:keystore.password" -out server.p12
    ) >"$tmp.log" 2>&1 || {
        cat "$tmp.log" >&2
        die "could not make the TLS certificates in $tmp"
    }
    chmod 600 "$tmp"/*.key "$tmp/keystore.password" "$tmp/server.p12"
    rm -rf "$TLS_DIR" "$tmp.log" && mv "$tmp" "$TLS_DIR"
}

prepare_security() {
    mkdir -p "$USERS_DIR" && chmod 700 "$USERS_DIR"
    if [[ ! -s $USERS_DIR/$ADMIN_USER ]]; then
        (umask 077 && random_password >"$USERS_DIR/$ADMIN_USER")
    fi
    make_tls
    FORMAT_ARGS=(--add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$(admin_password)]")
}

listener_config() {
    local pw keystore_pw
    pw=$(admin_password)
    keystore_pw=$(cat "$TLS_DIR/keystore.password")
    cat <<EOF
advertised.listeners=SASL_PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SSL_PORT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$ADMIN_USER" password="$pw";
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$keystore_pw
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$ADMIN_USER" password="$pw" user_$ADMIN_USER="$pw";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$ADMIN_USER
EOF
}

python_for_cli() {
    if [[ -x $REPO_ROOT/.venv/bin/python ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || die "python3 is needed to create the secured broker's users and ACLs"
    fi
}

# The admin's connection, as the services' settings spell it (over the SASL_PLAINTEXT listener).
admin_cli() {
    (
        cd "$REPO_ROOT"
        env MR_BUS=kafka MR_KAFKA_BOOTSTRAP_SERVERS="$HOST:$PORT" MR_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT \
            MR_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 MR_KAFKA_SASL_USERNAME="$ADMIN_USER" \
            MR_KAFKA_SASL_PASSWORD_FILE="$USERS_DIR/$ADMIN_USER" MR_TOPIC_PREFIX= \
            "$(python_for_cli)" -m services.cli kafka "$@"
    )
}

# The services' and departments' SCRAM users (a password generated for each one missing) and their
# ACLs; idempotent, skipped once done for this broker's data.
provision() {
    local stamp
    stamp=$(cat "$CLUSTER_ID_FILE")
    [[ -f $PROVISIONED && $(cat "$PROVISIONED") == "$stamp" ]] && return 0
    log "creating the SCRAM users and ACLs ($USERS_DIR) ..."
    local out
    out=$(admin_cli users apply "$USERS_DIR" --generate 2>&1) || {
        printf '%s\n' "$out" >&2
        die "could not create the SCRAM users"
    }
    out=$(admin_cli acls --apply 2>&1) || {
        printf '%s\n' "$out" >&2
        die "could not create the ACLs"
    }
    printf '%s\n' "$stamp" >"$PROVISIONED"
}

secure_env() {
    cat <<EOF
export MR_KAFKA_BOOTSTRAP_SERVERS=$HOST:$SSL_PORT
export MR_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export MR_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export MR_KAFKA_SASL_USERNAME=$ADMIN_USER
export MR_KAFKA_SASL_PASSWORD_FILE=$USERS_DIR/$ADMIN_USER
export MR_KAFKA_SSL_CAFILE=$TLS_DIR/ca.crt
# The same broker without TLS (SASL_PLAINTEXT), and one password file per user (a service runs as
# its own: MR_KAFKA_SASL_USERNAME=mr-router MR_KAFKA_SASL_PASSWORD_FILE=$USERS_DIR/mr-router).
export KAFKA_SASL_PLAINTEXT_SERVERS=$HOST:$PORT
export KAFKA_USERS_DIR=$USERS_DIR
EOF
}
