cwlVersion: v1.2
class: CommandLineTool
doc: Fail on purpose (for partially failing workflows).
baseCommand: [bash, -c, 'echo "failing on purpose" >&2; exit 3']
inputs: []
outputs:
  never:
    type: File
    outputBinding:
      glob: never.txt
