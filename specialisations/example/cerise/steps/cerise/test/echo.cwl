cwlVersion: v1.2
class: CommandLineTool
doc: Write a message to a file.
baseCommand: echo
inputs:
  message:
    type: string
    inputBinding:
      position: 1
stdout: output.txt
outputs:
  output:
    type: stdout
