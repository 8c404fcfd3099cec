cwlVersion: v1.2
class: CommandLineTool
doc: Print the name of the host the step runs on.
baseCommand: hostname
inputs: []
stdout: output.txt
outputs:
  output:
    type: File
    outputBinding: {glob: output.txt}
