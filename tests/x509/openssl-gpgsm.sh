#!/bin/sh
# A gpg.x509.program for tests: signs like gitsign/gpgsm, with `openssl cms -sign`.
# git calls it as `PROG --status-fd=2 -bsau KEY` with the commit on stdin and wants an
# armored detached signature on stdout and a SIG_CREATED status line on stderr.
# The signer is $X509_LEAF (PEM certificate) with key $X509_KEY. Verification mode is not
# implemented: byoc verifies by itself.
set -eu
case " $* " in
  *" -bsau "*) ;;
  *) echo "openssl-gpgsm.sh: only signing (-bsau) is supported" >&2; exit 2 ;;
esac
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.der"' EXIT
cat >"$tmp"
openssl cms -sign -binary -md sha256 -nosmimecap -signer "$X509_LEAF" -inkey "$X509_KEY" \
  -in "$tmp" -outform DER -out "$tmp.der"
echo "-----BEGIN SIGNED MESSAGE-----"
base64 -w 64 "$tmp.der"
echo "-----END SIGNED MESSAGE-----"
echo "[GNUPG:] SIG_CREATED D 19 8 00 $(date +%s) 0" >&2
