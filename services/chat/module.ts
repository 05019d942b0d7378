/** The chat service: chat turns, the agent catalogue, agent runs. */
import { AgentService } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { ChatService } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { register, type ServiceModule } from "../../platform/index.js";

export const chat: ServiceModule = {
  name: "chat",
  summary: "chat turns, the agent catalogue, agent runs (not built yet: every RPC answers UNIMPLEMENTED)",
  serves: [ChatService, AgentService],
  replicas: 2,
  start: () => ({ services: [register(ChatService, {}), register(AgentService, {})] }),
};
