cwlVersion: v1.2
class: CommandLineTool
doc: Concatenate a file and its index (a secondary file) into one output.
baseCommand: cat
inputs:
  file:
    type: File
    secondaryFiles:
      - .idx
    inputBinding:
      position: 1
      valueFrom: $(self.path) $(self.secondaryFiles[0].path)
      shellQuote: false
requirements:
  ShellCommandRequirement: {}
  InlineJavascriptRequirement: {}
stdout: output.txt
outputs:
  output:
    type: stdout
