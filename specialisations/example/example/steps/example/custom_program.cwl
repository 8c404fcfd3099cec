cwlVersion: v1.2
class: CommandLineTool
doc: >-
  Put a heading above a text file, with a script of the project's own (files/add_heading.sh);
  $CERISE_PROJECT_FILES is replaced by the installed files/ directory when it is installed.
baseCommand: $CERISE_PROJECT_FILES/add_heading.sh
arguments: [$CERISE_PROJECT_FILES]
inputs:
  in_text:
    type: File
    inputBinding:
      position: 1
stdout: output.txt
outputs:
  out_text:
    type: File
    outputBinding: {glob: output.txt}
