#!/bin/sh
# A deploy script as written for nitro-cli (jq for the JSON), not a line changed for nitrodeck:
# tests/test_cli_compat.py runs it with a PATH whose `nitro-cli` is nitrodeck.
# Usage: nitro_cli_deploy.sh DIR   (DIR holds app.eif; the script works with paths relative to it)
set -eu
cd "$1"

[ "$(nitro-cli describe-enclaves | jq 'length')" -eq 0 ] || { echo "enclaves already running" >&2; exit 1; }

nitro-cli describe-eif --eif-path app.eif > eif.json
jq -e '.EifVersion == 4 and (.Measurements.PCR0 | length) == 96' eif.json > /dev/null

nitro-cli run-enclave --eif-path ./app.eif --memory 64 --cpu-count 2 --enclave-name app --debug-mode > run.json
enclave_id=$(jq -r '.EnclaveID' run.json)
cid=$(jq -r '.EnclaveCID' run.json)

state=$(nitro-cli describe-enclaves | jq -r --arg id "$enclave_id" '.[] | select(.EnclaveID == $id) | .State')
[ "$state" = "RUNNING" ] || { echo "enclave $enclave_id is $state" >&2; exit 1; }
[ "$(nitro-cli describe-enclaves | jq -r '.[0].Flags')" = "DEBUG_MODE" ]

nitro-cli console --enclave-name app --disconnect-timeout 3 > console.txt
grep -q "Connecting to the console for enclave $cid" console.txt
grep -q "hello from the enclave" console.txt

nitro-cli terminate-enclave --enclave-name app | jq -e '.Terminated == true and .EnclaveName == "app"' > /dev/null
[ "$(nitro-cli describe-enclaves | jq 'length')" -eq 0 ]
echo "deployed and removed $enclave_id"
