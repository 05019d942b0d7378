/** The chat service: chat turns, the agent catalogue, agent runs. */
import { AgentService } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { ChatService } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { register } from "../../platform/rpc/pipeline.js";
import type { ServiceModule } from "../../platform/service.js";

export const chat: ServiceModule = {
  name: "chat",
  start: () => ({ services: [register(ChatService, {}), register(AgentService, {})] }),
};
