# %postun of the spliceway RPM ($1: 0 on erase, 1 or more on an upgrade).
# On an upgrade a running relay is restarted (try-restart; a stopped one stays stopped). On
# erase a modified /etc/spliceway/spliceway.toml is kept as spliceway.toml.rpmsave
# (%config(noreplace)); RPM has no purge.
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart spliceway.service >/dev/null 2>&1 || :
    fi
fi
