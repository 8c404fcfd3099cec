cwlVersion: v1.2
class: CommandLineTool
doc: Count the lines, words and bytes of a file.
baseCommand: wc
hints:
  ResourceRequirement:
    coresMin: 1
  ToolTimeLimit:
    timelimit: 60
inputs:
  file:
    type: File
    inputBinding:
      position: 1
stdout: output.txt
outputs:
  output:
    type: stdout
