#!/bin/bash
# Print the heading that install.sh made, then the input file.
CERISE_PROJECT_FILES="$1"
INPUT_FILE="$2"
cat "$CERISE_PROJECT_FILES/heading.txt" "$INPUT_FILE"
