# %post of the spliceway RPM ($1: 1 on a first install, 2 or more on an upgrade).
# Enables spliceway.service, but does not start it on a first install: the example
# /etc/spliceway/spliceway.toml has one route, listening on port 443 (0.0.0.0 and [::]) and
# relaying the private networks of its allow list to S3. Edit it, then
#   spliceway check --config /etc/spliceway/spliceway.toml && systemctl start spliceway
# Without systemd (a container, a chroot) nothing fails.
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload enable spliceway.service >/dev/null 2>&1 || :
        echo "spliceway: enabled, not started. Edit /etc/spliceway/spliceway.toml (one route: port 443 to S3, private networks only),"
        echo "spliceway: then: spliceway check --config /etc/spliceway/spliceway.toml && systemctl start spliceway"
    fi
fi
