#!/bin/bash
# Run once per install, on the compute resource, in the new project directory, with
# CERISE_PROJECT_FILES set to its files/ directory (also given as the first argument).
# Its output is kept in install.log there; when it fails, the end of it shows in the
# Specialisation's status.
set -e
echo '=== Here is a heading! ===' > "$CERISE_PROJECT_FILES/heading.txt"
echo "wrote $CERISE_PROJECT_FILES/heading.txt"
