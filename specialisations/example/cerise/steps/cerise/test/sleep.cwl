cwlVersion: v1.2
class: CommandLineTool
doc: Wait for a number of seconds.
baseCommand: sleep
inputs:
  delay:
    type: int
    inputBinding:
      position: 1
outputs: []
