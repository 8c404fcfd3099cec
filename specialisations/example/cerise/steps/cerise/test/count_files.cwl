cwlVersion: v1.2
class: CommandLineTool
doc: Count the lines of each of several files; also keep a copy of each.
baseCommand: [wc, -l]
inputs:
  files:
    type: File[]
    inputBinding:
      position: 1
stdout: counts.txt
outputs:
  counts:
    type: stdout
