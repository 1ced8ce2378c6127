# %preun of the spliceway RPM ($1: 0 on erase, 1 or more on an upgrade).
# On erase: stop the relay (SIGTERM drains) and its socket unit, and disable them.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now spliceway.service spliceway.socket >/dev/null 2>&1 || :
fi
