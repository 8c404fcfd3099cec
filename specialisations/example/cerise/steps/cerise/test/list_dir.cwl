cwlVersion: v1.2
class: CommandLineTool
doc: List a directory, and make a directory of results.
baseCommand: [bash, -c, 'ls "$0" > listing.txt && mkdir -p results && cp "$0"/* results/']
inputs:
  dir:
    type: Directory
    inputBinding:
      position: 1
outputs:
  listing:
    type: File
    outputBinding:
      glob: listing.txt
  results:
    type: Directory
    outputBinding:
      glob: results
